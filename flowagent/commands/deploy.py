"""`flowagent deploy haproxy`: the load balancer's configuration for several serve nodes.

Why HAProxy in TCP mode: AudioSocket is a plain TCP stream, one connection per call, and calls
are independent, so any node can take any call; what the balancer must know is which nodes are
ready. It asks each node's `GET /healthz` (200 ready, 503 draining after SIGTERM), sends new
calls to the ready node with the fewest calls, and skips a node that refuses a connection. See
docs/scale.md for the whole picture (and docs/deploy.md for Asterisk's own failover instead).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import jinja2
from rich.console import Console
from rich.markup import escape

_HOST = re.compile(r"^[A-Za-z0-9.\-]+$|^\[[0-9A-Fa-f:]+\]$")
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
_PATH = re.compile(r"^/[A-Za-z0-9_./\-]*$")


@dataclass(frozen=True)
class Node:
    name: str
    host: str
    audiosocket_port: int
    http_port: int


def parse_node(text: str, index: int) -> Node:
    """`[NAME=]HOST:AUDIOSOCKET_PORT:HTTP_PORT`, e.g. `node1=10.0.0.11:9099:8080`."""
    name, sep, rest = text.partition("=")
    if not sep:
        name, rest = f"node{index}", text
    parts = rest.rsplit(":", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise ValueError(f"--node {text!r} must be [NAME=]HOST:AUDIOSOCKET_PORT:HTTP_PORT, for"
                         " example node1=10.0.0.11:9099:8080.")
    host, as_port, http_port = parts[0], int(parts[1]), int(parts[2])
    if not _NAME.match(name) or not _HOST.match(host):
        raise ValueError(f"--node {text!r}: the name and host may use letters, digits and . -"
                         " only.")
    for port in (as_port, http_port):
        if not 0 < port < 65536:
            raise ValueError(f"--node {text!r}: {port} is not a TCP port (1-65535).")
    return Node(name, host, as_port, http_port)


def render(nodes: list[str], *, listen: str = "0.0.0.0:9099", check_ms: int = 1000,
           fall: int = 2, rise: int = 2, maxconn: int = 20000, stats: str = "",
           connect_timeout_ms: int = 2000) -> str:
    """The HAProxy configuration (raises ValueError with one sentence for bad input)."""
    if not nodes:
        raise ValueError("Give at least one --node [NAME=]HOST:AUDIOSOCKET_PORT:HTTP_PORT.")
    parsed = [parse_node(n, i + 1) for i, n in enumerate(nodes)]
    if len({n.name for n in parsed}) != len(parsed):
        raise ValueError("Each --node needs its own name (NAME=HOST:PORT:PORT).")
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not (host == "" or _HOST.match(host)):
        raise ValueError(f"--listen must be HOST:PORT, for example 0.0.0.0:9099 (got {listen!r}).")
    if stats and not _PATH.match(stats):
        raise ValueError(f"--stats-socket must be an absolute path (got {stats!r}).")
    if min(check_ms, fall, rise, maxconn, connect_timeout_ms) < 1:
        raise ValueError("--check-interval-ms, --fall, --rise and --maxconn must be 1 or more.")
    text = resources.files("flowagent.asterisk").joinpath("templates", "haproxy.cfg").read_text(
        encoding="utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=False)
    return env.from_string(text).render(
        nodes=parsed, listen=listen, check_ms=check_ms, fall=fall, rise=rise, maxconn=maxconn,
        stats=stats, connect_timeout_ms=connect_timeout_ms)


def run(nodes: list[str], *, listen: str, check_ms: int, fall: int, rise: int,
        stats: str = "", maxconn: int = 20000) -> int:
    try:
        text = render(nodes, listen=listen, check_ms=check_ms, fall=fall, rise=rise,
                      stats=stats, maxconn=maxconn)
    except ValueError as exc:
        Console(stderr=True).print(f"[red]{escape(str(exc))}[/red]")
        return 2
    print(text, end="")
    return 0
