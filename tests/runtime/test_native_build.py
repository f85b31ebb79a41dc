"""The native media loop is optional at install time (no compiler -> pure Python), so a broken C
build would otherwise pass unnoticed: every native test would skip and the server would quietly
run the slower path. Where a compiler and Python's headers exist, the build must have worked."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

from flowagent.runner import native_player


def test_the_native_media_loop_is_built_where_it_can_be() -> None:
    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not (shutil.which("cc") or shutil.which("gcc")) or not headers.exists():
        pytest.skip("no C compiler or Python headers here: the pure-Python path is expected")
    assert native_player.available(), (
        "flowagent._medialoop did not build although a compiler is present: "
        "run `pip install -e .` and read the compiler's output")


def test_the_server_picks_the_native_backend_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    if not native_player.available():
        pytest.skip("flowagent._medialoop not built")
    monkeypatch.delenv("FLOWAGENT_MEDIA", raising=False)
    assert native_player.backend_name() == "native"
    monkeypatch.setenv("FLOWAGENT_MEDIA", "python")
    assert native_player.backend_name() == "python"
