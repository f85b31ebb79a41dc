"""Read an operator's existing Asterisk files and say, line by line, what flowagent needs there.

Why: pasting a snippet into a real `modules.conf` goes wrong in quiet ways. A snippet with its
own `[modules]` header pasted at the end of the file becomes a second `[modules]` section, which
Asterisk ignores without a word; with `autoload=no` every module that is not `load =>`-ed is
simply absent, and the first call fails with "Function CALLERID not registered"; a
`noload =>` line beats `autoload=yes`. In `extensions.conf`, `AudioSocket(${UUID},...)` reads as
fine to a person but is an unset variable to Asterisk, which then drops every call.

`check_file(path)` recognises the file by its content (a `[modules]` section, or dialplan
`exten =>` lines) and returns findings: severity, `file:line`, one plain sentence, what to do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

#: the modules the generated dialplans use (see templates/modules.conf), and why
NEEDED_MODULES: dict[str, str] = {
    "res_audiosocket.so": "the AudioSocket protocol",
    "app_audiosocket.so": "the AudioSocket() application",
    "chan_audiosocket.so": "Dial(AudioSocket/...) for 16 kHz calls",
    "res_curl.so": "CURL(), the call registration",
    "func_curl.so": "CURL() and CURLOPT()",
    "func_uri.so": "URIENCODE()",
    "func_uuid.so": "UUID()",
    "func_callerid.so": "CALLERID(), the caller's number",
    "func_strings.so": "LEN()",
    "app_dial.so": "Dial(), transfers to a person",
}
#: modules that do not exist as loadable modules (built into the core)
NOT_MODULES = {"res_manager.so": "the manager interface (AMI) is built into Asterisk"}

_SECTION = re.compile(r"^\s*\[([^\]]+)\]")
_SETTING = re.compile(r"^\s*([A-Za-z_]+)\s*=>?\s*(.*?)\s*(;.*)?$")


@dataclass(frozen=True, slots=True)
class ConfigFinding:
    severity: str  # error | warning
    path: str
    line: int
    message: str

    def render(self) -> str:
        return f"{self.path}:{self.line}: {self.severity}: {self.message}"


def check_file(path: Path) -> list[ConfigFinding]:
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    if any(_SECTION.match(ln) and _SECTION.match(ln).group(1).strip() == "modules"  # type: ignore[union-attr]
           for ln in lines):
        return check_modules(str(path), lines)
    if any(re.match(r"^\s*(exten|same)\s*=>", ln) for ln in lines):
        return check_dialplan(str(path), lines)
    return [ConfigFinding("warning", str(path), 1,
                          "This is neither a modules.conf (no [modules] section) nor a dialplan "
                          "(no exten => lines); flowagent checks only those two.")]


def check_modules(path: str, lines: list[str]) -> list[ConfigFinding]:
    out: list[ConfigFinding] = []
    sections: list[tuple[str, int]] = []
    autoload: bool | None = None
    loaded: dict[str, int] = {}
    noloaded: dict[str, int] = {}
    first_modules_end = len(lines)
    in_first = False
    for no, raw in enumerate(lines, 1):
        line = raw.split(";", 1)[0].strip()
        m = _SECTION.match(line)
        if m:
            name = m.group(1).strip()
            if in_first:
                first_modules_end = no - 1
            in_first = name == "modules" and not any(s == "modules" for s, _ in sections)
            sections.append((name, no))
            continue
        if not line or not in_first:
            continue  # only the first [modules] section counts (Asterisk reads no other)
        key, _, value = line.partition("=>") if "=>" in line else line.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "autoload":
            autoload = value.lower() in ("yes", "true", "1", "on")
        elif key in ("load", "preload", "require", "preload-require"):
            loaded.setdefault(value, no)
        elif key == "noload":
            noloaded.setdefault(value, no)
    modules_at = [no for name, no in sections if name == "modules"]
    first = modules_at[0]
    for extra in modules_at[1:]:
        out.append(ConfigFinding(
            "error", path, extra,
            f"A second [modules] section: Asterisk reads only the first (line {first}) and "
            "ignores this one silently; move its lines up into the first and delete this "
            "header."))
    insert_at = _last_content_line(lines, first, first_modules_end)
    for module, line_no in loaded.items():
        if module in NOT_MODULES:
            out.append(ConfigFinding(
                "error", path, line_no,
                f"`load => {module}` names a module that does not exist "
                f"({NOT_MODULES[module]}); delete this line, or Asterisk logs an error at every "
                "start."))
    for module, why in NEEDED_MODULES.items():
        if module in noloaded:
            out.append(ConfigFinding(
                "error", path, noloaded[module],
                f"`noload => {module}` stops {why}, which flowagent's dialplan uses; delete "
                "this line."))
        elif autoload is False and module not in loaded:
            out.append(ConfigFinding(
                "error", path, insert_at,
                f"autoload=no and {module} is not loaded: add `load => {module}` ({why}) "
                f"after line {insert_at}, inside the [modules] section that starts at line "
                f"{first}."))
    return out


def check_dialplan(path: str, lines: list[str]) -> list[ConfigFinding]:
    out: list[ConfigFinding] = []
    has_flowagent = False
    for no, raw in enumerate(lines, 1):
        line = raw.split(";", 1)[0]
        if _SECTION.match(line) and "flowagent" in line:
            has_flowagent = True
        m = re.search(r"AudioSocket\(\s*\$\{UUID\}", line)
        if m:
            out.append(ConfigFinding(
                "error", path, no,
                "AudioSocket(${UUID},...) uses ${UUID}, an unset variable (the function is "
                "${UUID()}): Asterisk logs 'UUID is required' and drops every call; write "
                "${UUID()} here, or better paste flowagent's [flowagent] context, which "
                "registers the call first."))
        m = re.search(r"GotoIf\(\$\[\$\{LEN\(\$\{FLOWAGENT_REPLY\}\)\}\s*=\s*0\]", line)
        if m:
            out.append(ConfigFinding(
                "warning", path, no,
                "This registration check lets a refused registration through (a wrong token "
                "answers 401 with a non-empty body); use flowagent's current [flowagent] "
                "context, which checks for the word \"registered\"."))
    if not has_flowagent:
        out.append(ConfigFinding(
            "warning", path, 1,
            "No [flowagent] context here yet: paste the output of `flowagent asterisk config "
            "--part extensions` at the end of this file and send your number to it."))
    return out


def _last_content_line(lines: list[str], start: int, end: int) -> int:
    """The last non-blank, non-comment line of the section that starts at line `start`."""
    last = start
    for no in range(start + 1, min(end, len(lines)) + 1):
        s = lines[no - 1].strip()
        if s and not s.startswith(";"):
            last = no
    return last
