"""Carry out the engine's `CallTool` actions and answer with `ToolResult` events.

The engine renders a tool's request (URL, headers, JSON body — or a python tool's arguments) and
checks its `needs:` before it ever emits `CallTool`; this module only does the I/O, so the same
runner serves `flowagent chat`, `flowagent test` and live calls.

* HTTP tools go through **one shared aiohttp ClientSession per event loop** (connection pooling;
  `close_shared_session()` at shutdown), with the tool's timeout on every attempt and retries with
  exponential backoff (`backoff_s * 2**attempt`) when the engine allowed them (only idempotent
  calls get `retries > 0`). Timeouts, connection errors and 5xx are retried; 4xx are not.
  Any non-2xx, timeout, connection error or non-JSON body is a failure with a plain-English
  `error` — the flow then takes its failure path.
* Python tools, for developers::

      from flowagent.dialogue.tools import register_tool

      @register_tool("mycompany:lookup_booking")
      async def lookup_booking(args: dict, ctx: dict) -> dict:
          # ctx has "slots", "vars", "call" and "context" (copies)
          return {"found": True, "date": "2026-03-14"}

  and in the flow: ``tools: {lookup_booking: {python: "mycompany:lookup_booking"}}``. The
  registry is looked up first; a name that is not registered is imported as
  ``package.module:function`` (no decorator needed then). Names are written `module:function`
  either way, which is the form `flowagent validate` checks.
  A plain (non-async) function is run in a worker thread so it cannot block the call. What it
  returns becomes `response` for `save:`; an exception is a tool failure.
* `CannedTools` answers from a YAML file instead of the network (chat `--tools`, conversation
  tests). Per tool, one entry or a list of entries used in turn (the last one repeats)::

      get_quote: {response: {price: 450, quote_id: Q-1}}      # 200 with this JSON
      book_move:
        - {status: 500, response: {error: busy}}              # first call fails...
        - {response: {reference: SR-123}}                     # ...the second succeeds
      lookup: {fail: timeout}                                 # or: connection | bad_json

  A mapping without any of the keys `response`, `status`, `fail` is taken as the response itself.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from flowagent.dialogue.actions import CallTool
from flowagent.dialogue.events import ToolResult

PythonTool = Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any] | Any]

_REGISTRY: dict[str, PythonTool] = {}


def register_tool(name: str) -> Callable[[PythonTool], PythonTool]:
    """Decorator: make a python function available to flows as ``python: "<name>"``."""

    def deco(func: PythonTool) -> PythonTool:
        _REGISTRY[name] = func
        return func

    return deco


def resolve_python_tool(ref: str) -> PythonTool:
    """A registered name, or ``module:function``. Raises LookupError with a plain sentence."""
    if ref in _REGISTRY:
        return _REGISTRY[ref]
    if ":" not in ref:
        raise LookupError(
            f"No python tool is registered as {ref!r}; register it with "
            f"@register_tool({ref!r}) or write it as 'module:function'."
        )
    mod_name, _, func_name = ref.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except ImportError as exc:
        raise LookupError(
            f"The python tool module {mod_name!r} cannot be imported: {exc}."
        ) from None
    func = getattr(module, func_name, None)
    if not callable(func):
        raise LookupError(f"The module {mod_name!r} has no function called {func_name!r}.")
    found: PythonTool = func
    return found


# ---------------------------------------------------------------------------------------------
# Shared HTTP session
# ---------------------------------------------------------------------------------------------

# keyed by the loop itself (weakly), so a session never outlives or crosses its event loop
_SESSIONS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)


def shared_session() -> aiohttp.ClientSession:
    """The process's ClientSession for the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    session = _SESSIONS.get(loop)
    if session is None or session.closed:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=200, ttl_dns_cache=300),
            headers={"User-Agent": "flowagent"},
        )
        _SESSIONS[loop] = session
    return session


async def close_shared_session() -> None:
    """Close the running loop's shared session (call at shutdown / end of a CLI run)."""
    loop = asyncio.get_running_loop()
    session = _SESSIONS.pop(loop, None)
    if session is not None and not session.closed:
        await session.close()


# ---------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------


class _Retryable(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass
class ToolLogEntry:
    """What a runner did, for chat's /tools and conversation-test expectations (unredacted:
    this never leaves the process)."""

    tool: str
    request: dict[str, Any]
    result: ToolResult


class ToolRunner:
    """Executes `CallTool` actions. `await runner.run(action) -> ToolResult`; never raises.

    `session`: an aiohttp ClientSession to use instead of the shared one (tests).
    `backoff_s`: first retry delay; doubles on each further retry.
    """

    def __init__(
        self,
        *,
        session: aiohttp.ClientSession | None = None,
        backoff_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self.backoff_s = backoff_s
        self._clock = clock
        self.log: list[ToolLogEntry] = []

    async def run(self, action: CallTool) -> ToolResult:
        try:
            result = await self._run(action)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a python tool or an odd request must not kill a call
            result = self._fail(action, f"The {action.tool} tool failed: {exc}.")
        self.log.append(ToolLogEntry(action.tool, dict(action.request), result))
        return result

    async def _run(self, action: CallTool) -> ToolResult:
        if "python" in action.request:
            return await self._run_python(action)
        return await self._run_http(action)

    # -- python -------------------------------------------------------------------------------

    async def _run_python(self, action: CallTool) -> ToolResult:
        try:
            func = resolve_python_tool(str(action.request["python"]))
        except LookupError as exc:
            return self._fail(action, str(exc))
        args = dict(action.request.get("args") or {})
        ctx = dict(action.request.get("context") or {})
        try:
            async with asyncio.timeout(action.timeout_s):
                if inspect.iscoroutinefunction(func):
                    value = await func(args, ctx)
                else:
                    value = await asyncio.to_thread(func, args, ctx)
                    if inspect.isawaitable(value):
                        value = await value
        except TimeoutError:
            return self._fail(
                action,
                f"The {action.tool} tool did not finish within {action.timeout_s:g} seconds.",
            )
        except Exception as exc:
            return self._fail(action, f"The {action.tool} tool raised an error: {exc}.")
        return ToolResult(action.call_id, action.tool, True, None, value, "")

    # -- http ---------------------------------------------------------------------------------

    async def _run_http(self, action: CallTool) -> ToolResult:
        req = action.request
        method = str(req.get("method", "GET")).upper()
        url = str(req.get("url", ""))
        if not url.startswith(("http://", "https://")):
            return self._fail(
                action,
                f"The {action.tool} tool's URL {url!r} does not start with http:// or https://.",
            )
        headers = {str(k): str(v) for k, v in (req.get("headers") or {}).items()}
        body = req.get("json")
        session = self._session or shared_session()
        attempts = 1 + max(0, int(action.retries))
        last: _Retryable | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(self.backoff_s * (2 ** (attempt - 1)))
            try:
                status, data = await self._attempt(session, action, method, url, headers, body)
            except _Retryable as exc:
                last = exc
                continue
            except _Final as exc:
                return self._fail(action, exc.message, exc.status, exc.data)
            return ToolResult(action.call_id, action.tool, True, status, data, "")
        assert last is not None
        tried = f" (tried {attempts} times)" if attempts > 1 else ""
        return self._fail(action, last.message.rstrip(".") + tried + ".", last.status)

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        action: CallTool,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Any,
    ) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=action.timeout_s)
        kwargs: dict[str, Any] = {"headers": headers, "timeout": timeout}
        if body is not None and method not in ("GET", "DELETE"):
            kwargs["json"] = body
        elif body is not None and isinstance(body, dict):
            kwargs["params"] = {k: _param(v) for k, v in body.items()}
        try:
            async with session.request(method, url, **kwargs) as resp:
                raw = await resp.read()
                status = resp.status
                reason = resp.reason or ""
        except TimeoutError:
            raise _Retryable(
                f"The {action.tool} tool did not answer within {action.timeout_s:g} seconds"
            ) from None
        except aiohttp.ClientError as exc:
            raise _Retryable(
                f"Could not reach the {action.tool} tool at {_host(url)}: "
                f"{exc.__class__.__name__}"
            ) from None
        data: Any = None
        bad_json = False
        if raw.strip():
            try:
                data = json.loads(raw)
            except ValueError:
                bad_json = True
        if status >= 500:
            raise _Retryable(
                f"The {action.tool} tool answered with HTTP {status} {reason}".rstrip(), status
            )
        if status >= 300:
            raise _Final(
                f"The {action.tool} tool answered with HTTP {status} {reason}".rstrip() + ".",
                status,
                data,
            )
        if bad_json:
            raise _Final(f"The {action.tool} tool's answer was not valid JSON.", status)
        return status, data

    def _fail(
        self, action: CallTool, error: str, status: int | None = None, data: Any = None
    ) -> ToolResult:
        return ToolResult(action.call_id, action.tool, False, status, data, error)


class _Final(Exception):
    def __init__(self, message: str, status: int | None = None, data: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.data = data


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _host(url: str) -> str:
    rest = url.split("://", 1)[-1]
    return rest.split("/", 1)[0].split("?", 1)[0]


# ---------------------------------------------------------------------------------------------
# Canned responses
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CannedResponse:
    status: int = 200
    response: Any = None
    fail: str = ""  # "" | timeout | connection | bad_json


_SPEC_KEYS = {"response", "status", "fail"}
_FAILS = {"timeout", "connection", "bad_json"}


class CannedError(ValueError):
    """The canned-responses file is malformed (message says where and what to do)."""


def parse_canned(data: Any, where: str = "tools") -> dict[str, list[CannedResponse]]:
    """Turn {tool: entry | [entry, ...]} data into canned responses (see module docstring)."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CannedError(f"{where} must be a mapping of tool name to canned response.")
    out: dict[str, list[CannedResponse]] = {}
    for tool, spec in data.items():
        items = spec if isinstance(spec, list) else [spec]
        if not items:
            raise CannedError(f"{where}.{tool} is an empty list; give at least one response.")
        parsed = []
        for item in items:
            if isinstance(item, dict) and item and set(item) <= _SPEC_KEYS:
                fail = str(item.get("fail", "") or "")
                if fail and fail not in _FAILS:
                    raise CannedError(
                        f"{where}.{tool}: fail must be one of timeout, connection, bad_json "
                        f"(not {fail!r})."
                    )
                try:
                    status = int(item.get("status", 200))
                except (TypeError, ValueError):
                    raise CannedError(f"{where}.{tool}: status must be a number.") from None
                parsed.append(CannedResponse(status, item.get("response"), fail))
            else:
                parsed.append(CannedResponse(200, item, ""))
        out[str(tool)] = parsed
    return out


class CannedTools(ToolRunner):
    """A ToolRunner that answers from canned responses instead of the network.

    Tools without a canned entry: python tools still run (they are local code); HTTP tools
    fail with a plain sentence, unless `passthrough=True`, which sends them for real.
    """

    def __init__(
        self,
        responses: dict[str, list[CannedResponse]] | None = None,
        passthrough: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.responses = dict(responses or {})
        self.passthrough = passthrough
        self._used: dict[str, int] = {}

    @classmethod
    def from_file(cls, path: str | Path, *, passthrough: bool = False) -> CannedTools:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise CannedError(f"{path} is not valid YAML: {exc}") from None
        if isinstance(data, dict) and set(data) == {"tools"}:
            data = data["tools"]
        return cls(parse_canned(data, str(path)), passthrough)

    def reset(self) -> None:
        self._used.clear()
        self.log.clear()

    async def _run(self, action: CallTool) -> ToolResult:
        entries = self.responses.get(action.tool)
        if entries is None:
            if "python" in action.request or self.passthrough:
                return await super()._run(action)
            return self._fail(
                action,
                f"There is no canned response for the {action.tool} tool; add one to the "
                "tools file.",
            )
        n = self._used.get(action.tool, 0)
        self._used[action.tool] = n + 1
        entry = entries[min(n, len(entries) - 1)]
        if entry.fail == "timeout":
            return self._fail(
                action,
                f"The {action.tool} tool did not answer within {action.timeout_s:g} seconds.",
            )
        if entry.fail == "connection":
            return self._fail(action, f"Could not reach the {action.tool} tool.")
        if entry.fail == "bad_json":
            return self._fail(
                action, f"The {action.tool} tool's answer was not valid JSON.", entry.status
            )
        if not 200 <= entry.status < 300:
            return self._fail(
                action,
                f"The {action.tool} tool answered with HTTP {entry.status}.",
                entry.status,
                entry.response,
            )
        return ToolResult(action.call_id, action.tool, True, entry.status, entry.response, "")
