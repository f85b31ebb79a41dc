"""Loaded by the `flowagent serve` / `flowagent call` subprocesses of the end-to-end tests (put on
PYTHONPATH): like tests/conftest.py, any connection or name lookup beyond loopback fails, and is
reported on stderr as `NETWORK-BLOCKED <host>` so the test can assert none was attempted."""

from __future__ import annotations

import ipaddress
import socket
import sys

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex
_getaddrinfo = socket.getaddrinfo
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "", None}


def _refuse(host: object) -> None:
    print(f"NETWORK-BLOCKED {host!r}", file=sys.stderr, flush=True)
    raise OSError(f"network blocked by the e2e test: {host!r} is not loopback")


def _is_loopback(host: object) -> bool:
    if host in _LOCAL_NAMES:
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _check(sock: socket.socket, address: object) -> None:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return
    host = address[0] if isinstance(address, tuple) else address
    if not _is_loopback(host):
        _refuse(host)


def _guarded_connect(self: socket.socket, address: object) -> None:
    _check(self, address)
    return _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _check(self, address)
    return _connect_ex(self, address)


def _guarded_getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
    if isinstance(host, bytes):
        host = host.decode()
    if not _is_loopback(host):
        _refuse(host)
    return _getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]


socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo  # type: ignore[assignment]


# E2E_HIDE_MODULES=a,b: those top-level packages look uninstalled to importlib.util.find_spec
# (how serve's "offline stack missing" message is tested without uninstalling anything)
def _hide_modules() -> None:
    import importlib.util
    import os

    hidden = {m for m in os.environ.get("E2E_HIDE_MODULES", "").split(",") if m}
    if not hidden:
        return
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None) -> object:
        if name.split(".")[0] in hidden:
            return None
        return real(name, package)

    importlib.util.find_spec = find_spec  # type: ignore[assignment]


_hide_modules()
