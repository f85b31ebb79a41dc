"""Plays Asterisk's side of an AGI conversation with a real `flowagent-agi` subprocess.

Asterisk writes the `agi_*` block, then answers every command line with `200 result=...`.
We do exactly that over the child's stdin/stdout pipes and record what it asked for.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

AGI_ENV = {
    "agi_request": "flowagent-setup.agi",
    "agi_channel": "PJSIP/trunk-00000007",
    "agi_language": "en",
    "agi_type": "PJSIP",
    "agi_uniqueid": "1700000000.42",
    "agi_version": "20.5.0",
    "agi_callerid": "+447700900123",
    "agi_calleridname": "Jo Bloggs",
    "agi_callingpres": "0",
    "agi_dnid": "01632960000",
    "agi_context": "flowagent-agi",
    "agi_extension": "01632960000",
    "agi_priority": "3",
    "agi_enhanced": "0.0",
    "agi_accountcode": "",
    "agi_threadid": "140000000000",
}

_SET = re.compile(r'^SET VARIABLE (\S+) "((?:[^"\\]|\\.)*)"$')


@dataclass
class AgiRun:
    commands: list[str] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)
    returncode: int = -1
    stderr: str = ""


def run_agi(args: list[str], channel_vars: dict[str, str], *, hangup_first: bool = False,
            extra_env: dict[str, str] | None = None, timeout: float = 30) -> AgiRun:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWAGENT_")}
    env.update(extra_env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowagent.asterisk.agi", *args],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, bufsize=1,
    )
    assert proc.stdin and proc.stdout and proc.stderr
    run = AgiRun()
    for name, value in AGI_ENV.items():
        proc.stdin.write(f"{name}: {value}\n")
    for i, arg in enumerate(args, 1):
        proc.stdin.write(f"agi_arg_{i}: {arg}\n")
    proc.stdin.write("\n")
    proc.stdin.flush()
    while True:
        line = proc.stdout.readline()
        if not line:
            break
        line = line.rstrip("\n")
        run.commands.append(line)
        if hangup_first:
            proc.stdin.write("HANGUP\n")
            hangup_first = False
        if line.startswith("GET VARIABLE "):
            name = line.split(" ", 2)[2]
            if name in channel_vars:
                proc.stdin.write(f"200 result=1 ({channel_vars[name]})\n")
            else:
                proc.stdin.write("200 result=0\n")
        elif (m := _SET.match(line)) is not None:
            value = re.sub(r"\\(.)", r"\1", m.group(2))
            run.variables[m.group(1)] = value
            proc.stdin.write("200 result=1\n")
        elif line.startswith("VERBOSE "):
            proc.stdin.write("200 result=1\n")
        else:
            proc.stdin.write("510 Invalid or unknown command\n")
        proc.stdin.flush()
    proc.stdin.close()
    run.stderr = proc.stderr.read()
    run.returncode = proc.wait(timeout=timeout)
    return run
