"""HTML of the web page, built with escaping string functions (no template files to ship).

Every page is a complete, semantic document that works without JavaScript (forms and links);
`static/ui.js` only adds the live updates. Every piece of user or caller data goes through
`esc()`.
"""

from __future__ import annotations

import datetime as dt
import json
from html import escape
from typing import Any

from flowagent.graph.render import legend_html, text_html, to_svg
from flowagent.graph.status import FlowStatus


def esc(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def when(ts: Any) -> str:
    if not isinstance(ts, (int, float)):
        return ""
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def layout(prefix: str, title: str, body: str, *, data: dict[str, Any] | None = None) -> str:
    """The frame of every page. `data` is handed to ui.js as JSON (escaped for a script tag)."""
    payload = json.dumps(data or {}).replace("</", "<\\/")
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)} · flowagent</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{prefix}/static/ui.css">
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header><nav aria-label="Main">
<a href="{prefix}/" class="brand">flowagent</a>
<a href="{prefix}/">Flows &amp; live calls</a>
<a href="{prefix}/records">Call records</a>
</nav></header>
<main id="main">
{body}
</main>
<script id="page-data" type="application/json">{payload}</script>
<script src="{prefix}/static/ui.js" defer></script>
</body>
</html>
"""


def login_page(prefix: str, next_url: str, failed: bool) -> str:
    error = (
        '<p class="error" role="alert">That token is not right. Check the token the server was '
        "started with.</p>"
        if failed
        else ""
    )
    body = f"""<h1>Sign in</h1>
{error}
<form method="post" action="{prefix}/login" class="card">
<input type="hidden" name="next" value="{esc(next_url)}">
<label for="token">Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>"""
    return layout(prefix, "Sign in", body)


_STATUS_TEXT = {
    "valid": "valid",
    "warnings": "valid, with warnings",
    "errors": "has errors",
    "invalid": "cannot be loaded",
}


def status_badge(status: FlowStatus) -> str:
    return f'<span class="badge badge-{status.status}">{_STATUS_TEXT[status.status]}</span>'


def call_row(prefix: str, call: dict[str, Any]) -> str:
    """One call in the home page's lists: who, flow, when it started, its short id and where it
    is (or how it ended), so two calls from an unknown caller are still told apart."""
    state = "ended" + (f" ({call.get('outcome')})" if call.get("outcome") else "")
    started = dt.datetime.fromtimestamp(call["started_at"]).strftime("%H:%M:%S") \
        if call.get("started_at") else ""
    return (
        f'<li data-uuid="{esc(call["uuid"])}"><a href="{prefix}/calls/{esc(call["uuid"])}">'
        f"{esc(call.get('caller') or 'unknown caller')}</a> · {esc(call.get('flow'))} · "
        f'<span class="call-started">{esc(started)}</span> · '
        f'<span class="muted call-id">{esc(str(call["uuid"])[:8])}</span> · '
        f'<span class="call-state">{esc(state if call.get("ended") else call.get("state"))}'
        "</span></li>"
    )


def home_page(prefix: str, flows: dict[str, FlowStatus], live: list[dict[str, Any]]) -> str:
    rows = "".join(
        f'<li><a href="{prefix}/flows/{esc(key)}">{esc(st.name)}</a> '
        f'<span class="muted">{esc(st.path)}</span> {status_badge(st)}</li>'
        for key, st in flows.items()
    )
    calls = "".join(call_row(prefix, c) for c in live if not c.get("ended"))
    recent = "".join(call_row(prefix, c) for c in live if c.get("ended"))
    body = f"""<h1>flowagent</h1>
<section aria-labelledby="flows-h"><h2 id="flows-h">Flows</h2>
<ul class="list">{rows or "<li>No flows are loaded.</li>"}</ul></section>
<section aria-labelledby="live-h"><h2 id="live-h">Live calls</h2>
<p id="no-calls" {"hidden" if calls else ""}>No calls right now. This list updates by itself.</p>
<ul class="list" id="live-calls" aria-live="polite">{calls}</ul></section>
<section aria-labelledby="recent-h"><h2 id="recent-h">Recently ended</h2>
<p id="no-recent" {"hidden" if recent else ""}>No call has ended since the server started.
Older calls are under <a href="{prefix}/records">Records</a>.</p>
<ul class="list" id="recent-calls">{recent}</ul></section>"""
    return layout(prefix, "Flows and live calls", body, data={"page": "home", "prefix": prefix})


def findings_html(status: FlowStatus) -> str:
    items = [f'<li class="error-line">{esc(t)}</li>' for t in status.errors]
    items += [f'<li class="warning-line">{esc(t)}</li>' for t in status.warnings]
    extra = [f'<li class="error-line">{esc(t)}</li>' for t in status.blocking
             if t not in status.errors]
    all_items = extra + items
    if not all_items:
        return "<p>No problems found.</p>"
    return f'<ul class="findings">{"".join(all_items)}</ul>'


def graph_block(status: FlowStatus) -> str:
    if status.graph is None:
        return "<p>The flow cannot be drawn until the errors above are fixed.</p>"
    return (
        f'<div class="graph-scroll" tabindex="0" aria-label="Flow diagram, scrollable">'
        f"{to_svg(status.graph)}</div>"
        f"<details><summary>Key</summary>{legend_html(status.graph)}</details>"
        f"<details><summary>The flow as a list</summary>{text_html(status.graph)}</details>"
    )


def flow_page(prefix: str, key: str, status: FlowStatus, has_tests: bool) -> str:
    tests = (
        f"""<form method="post" action="{prefix}/flows/{esc(key)}/tests" id="run-tests">
<button type="submit">Run conversation tests</button>
</form>
<div id="test-results" aria-live="polite"></div>"""
        if has_tests
        else "<p>This flow has no conversation tests file (or the test runner is not installed)."
        "</p>"
    )
    body = f"""<h1>{esc(status.name)} {status_badge(status)}</h1>
<p class="muted">{esc(status.path)}</p>
<section aria-labelledby="val-h"><h2 id="val-h">Validation</h2>{findings_html(status)}</section>
<section aria-labelledby="graph-h"><h2 id="graph-h">Diagram</h2>{graph_block(status)}</section>
<section aria-labelledby="tests-h"><h2 id="tests-h">Conversation tests</h2>{tests}</section>"""
    return layout(prefix, status.name, body, data={"page": "flow", "prefix": prefix})


def test_results_html(results: list[dict[str, Any]], error: str = "") -> str:
    if error:
        return f'<p class="error" role="alert">{esc(error)}</p>'
    if not results:
        return "<p>No tests ran.</p>"
    passed = sum(1 for r in results if r.get("passed"))
    rows = "".join(
        f'<tr class="{"pass" if r.get("passed") else "fail"}"><td>{esc(r.get("name"))}</td>'
        f'<td>{"pass" if r.get("passed") else "FAIL"}</td><td>{esc(r.get("message", ""))}</td>'
        "</tr>"
        for r in results
    )
    return (
        f'<p class="test-summary">{passed} passed, {len(results) - passed} failed</p>'
        '<div class="table-scroll"><table class="tests"><thead><tr><th scope="col">Test</th>'
        f'<th scope="col">Result</th><th scope="col">Details</th></tr></thead><tbody>{rows}'
        "</tbody></table></div>"
    )


def transcript_html(lines: list[dict[str, Any]]) -> str:
    return "".join(
        f'<li class="who-{esc(line.get("who"))}"><span class="who">{esc(line.get("who"))}</span> '
        f'<span class="text">{esc(line.get("text"))}</span></li>'
        for line in lines
    )


def value_text(value: Any) -> str:
    """A slot or variable as every page (and `flowagent calls`) writes it: JSON's spelling, so
    a yes/no slot is `true` on the live page, the record page and in the record itself."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return json.dumps(value, ensure_ascii=False, default=str)


def slots_html(slots: dict[str, Any]) -> str:
    return "".join(f"<dt>{esc(k)}</dt><dd>{esc(value_text(v))}</dd>" for k, v in slots.items())


def latency_rows(entries: list[dict[str, Any]]) -> str:
    return "".join(
        f"<tr><td>{esc(e.get('turn', i + 1))}</td><td>{esc(e.get('state', ''))}</td>"
        f"<td>{esc(e.get('ms'))}</td></tr>"
        for i, e in enumerate(entries)
    )


def call_page(prefix: str, call: dict[str, Any], status: FlowStatus | None) -> str:
    graph = graph_block(status) if status is not None else "<p>The flow is not loaded.</p>"
    state = call.get("state") or ""
    ended = "ended" + (f" ({call.get('outcome')})" if call.get("outcome") else "")
    body = f"""<h1>Call from {esc(call.get("caller") or "unknown caller")}</h1>
<p class="muted">{esc(call.get("uuid"))} · flow {esc(call.get("flow"))} ·
started {esc(when(call.get("started_at")))}</p>
<p>Current state: <strong id="current-state" aria-live="polite">{esc(state)}</strong>
<span id="call-status" class="badge">{esc(ended if call.get("ended") else "live")}</span></p>
<div class="columns">
<section aria-labelledby="tr-h"><h2 id="tr-h">Transcript</h2>
<ol id="transcript" class="transcript" aria-live="polite">{transcript_html(call["transcript"])}</ol>
</section>
<section aria-labelledby="slots-h"><h2 id="slots-h">Slots</h2>
<dl id="slots" class="slots">{slots_html(call["slots"])}</dl>
<h2 id="lat-h">Latency per turn</h2>
<div class="table-scroll"><table aria-labelledby="lat-h"><thead><tr><th scope="col">Turn</th>
<th scope="col">State</th><th scope="col">ms</th></tr></thead>
<tbody id="latency">{latency_rows(call["latency"])}</tbody></table></div>
</section>
</div>
<section aria-labelledby="graph-h"><h2 id="graph-h">Where the call is</h2>{graph}</section>"""
    data = {
        "page": "call",
        "prefix": prefix,
        "uuid": call.get("uuid"),
        "state": state,
        "visited": call.get("states", []),
    }
    return layout(prefix, f"Call {call.get('uuid')}", body, data=data)


def records_page(
    prefix: str, rows: list[dict[str, Any]], caller: str, day: str, outcome: str
) -> str:
    trs = "".join(
        f'<tr><td><a href="{prefix}/records/{esc(r.get("uuid"))}">'
        f"{esc(when(r.get('started_at')))}</a></td><td>{esc(r.get('caller'))}</td>"
        f"<td>{esc(r.get('flow'))}</td><td>{esc(_outcome(r))}</td>"
        f"<td>{esc(round(r['duration_s'], 1) if r.get('duration_s') is not None else '')}</td>"
        "</tr>"
        for r in rows
    )
    body = f"""<h1>Call records</h1>
<form method="get" action="{prefix}/records" class="card search" role="search">
<div><label for="caller">Caller</label>
<input id="caller" name="caller" value="{esc(caller)}" inputmode="tel"></div>
<div><label for="date">Date</label>
<input id="date" name="date" type="date" value="{esc(day)}"></div>
<div><label for="outcome">Outcome</label>
<input id="outcome" name="outcome" value="{esc(outcome)}" placeholder="completed"></div>
<button type="submit">Search</button>
</form>
<p>{len(rows)} call{"" if len(rows) == 1 else "s"} found.</p>
<div class="table-scroll"><table class="records"><caption class="sr-only">Calls of every
node sharing the record store, those in progress first</caption>
<thead><tr><th scope="col">Started</th><th scope="col">Caller</th>
<th scope="col">Flow</th><th scope="col">Outcome</th><th scope="col">Seconds</th></tr></thead>
<tbody>{trs}</tbody></table></div>"""
    return layout(prefix, "Call records", body, data={"page": "records", "prefix": prefix})


def _outcome(row: dict[str, Any]) -> str:
    """A listed call's outcome; a call in progress (on any node sharing the store) says so."""
    if row.get("status") == "live":
        node = row.get("node")
        return "in progress" + (f" on {node}" if node else "")
    return str(row.get("outcome") or "")


def record_page(prefix: str, record: dict[str, Any], has_audio: bool) -> str:
    uuid = esc(record.get("uuid"))
    audio = (
        f'<audio controls preload="none" src="{prefix}/records/{uuid}/audio">'
        f'<a href="{prefix}/records/{uuid}/audio">Download the recording</a></audio>'
        if has_audio
        else "<p>No recording for this call (recording is off, or it was not kept).</p>"
    )
    latency = _record_latency(record)
    tools = "".join(
        f"<li>{esc(t.get('tool'))}: {'ok' if t.get('ok') else 'failed'}"
        f"{(' — ' + esc(t.get('error'))) if t.get('error') else ''}</li>"
        for t in record.get("tool_calls") or []
    )
    body = f"""<h1>Call from {esc(record.get("caller") or "unknown caller")}</h1>
<p class="muted">{uuid} · flow {esc(record.get("flow"))} · {esc(when(record.get("started_at")))}
· outcome <strong>{esc(record.get("outcome"))}</strong></p>
<section aria-labelledby="audio-h"><h2 id="audio-h">Agent audio</h2>{audio}</section>
<div class="columns">
<section aria-labelledby="tr-h"><h2 id="tr-h">Transcript</h2>
<ol class="transcript">{transcript_html(record.get("transcript") or [])}</ol></section>
<section aria-labelledby="slots-h"><h2 id="slots-h">Slots</h2>
<dl class="slots">{slots_html(record.get("slots") or {})}</dl>
<h2>Tool calls</h2><ul>{tools or "<li>none</li>"}</ul>
<h2 id="lat-h">Latency per turn</h2>
<div class="table-scroll"><table aria-labelledby="lat-h"><thead><tr><th scope="col">Turn</th>
<th scope="col">State</th><th scope="col">ms</th></tr></thead>
<tbody>{latency_rows(latency)}</tbody></table></div></section>
</div>"""
    return layout(prefix, f"Record {record.get('uuid')}", body, data={"page": "record"})


def _record_latency(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows for the latency table: the live server's measured rows (`latency`, milliseconds from
    the end of the caller's speech), else the engine's `turns` (seconds on one clock)."""
    rows = record.get("latency")
    if isinstance(rows, list) and rows:
        return [
            {"turn": i + 1, "state": r.get("state", ""),
             "ms": r.get("first_frame_ms") if r.get("first_frame_ms") is not None else "—"}
            for i, r in enumerate(rows)
            if isinstance(r, dict)
        ]
    return [
        {"turn": i + 1, "state": t.get("state", ""), "ms": _turn_ms(t)}
        for i, t in enumerate(record.get("turns") or [])
        if isinstance(t, dict)
    ]


def _turn_ms(turn: dict[str, Any]) -> Any:
    """End of caller speech -> first audio frame, when the runtime measured both."""
    end, first = turn.get("end_of_speech"), turn.get("first_frame")
    if isinstance(end, (int, float)) and isinstance(first, (int, float)):
        return round((first - end) * 1000, 1)
    return "—"


def not_found(prefix: str, what: str) -> str:
    return layout(prefix, "Not found", f"<h1>Not found</h1><p>{esc(what)}</p>")
