"""The wheel people install (docs/deploy.md): built here from the source tree with the native
media loop compiled in, installed into a fresh virtual environment, then used from there:
`flowagent validate` on the example flows and a short call on the offline speech stack.

No network: the wheel is built with `python -m build --no-isolation` (the build backend comes
from the test extras) and installed with `--no-deps --no-index`; the fresh environment reaches
the dependencies already installed here through a path file, so only flowagent itself comes
from the wheel (the editable install of this tree stays invisible to it: its finder is loaded
by a path file that the fresh environment does not process).
"""

from __future__ import annotations

import os
import shutil
import site
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (f"{cmd} exited {result.returncode}\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    src = tmp_path_factory.mktemp("src") / "flowagent"
    # build from a clean copy: no build/ or egg-info of the editable install leaks in
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.db",
        ".pytest_cache", ".ruff_cache", ".hypothesis", "prompt-cache", "recordings"))
    _run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, src,
         cwd=src)
    (built,) = out.glob("flowagent-*.whl")
    return built


@pytest.fixture(scope="module")
def fresh_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("venv") / "v"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    py = venv / "bin" / "python"
    purelib = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                        cwd=venv.parent).stdout.strip())
    # this environment's pip, working on the fresh one (its scripts then run its python).
    # First, while the fresh environment sees nothing else: pip must not find (and uninstall)
    # this tree's editable flowagent through the path file added next.
    _run(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index",
         wheel, cwd=venv.parent)
    # the dependencies installed here, without this tree's editable flowagent
    (purelib / "deps-from-test-env.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n", encoding="utf-8")
    return venv


def test_the_wheel_holds_the_native_loop_and_the_data_files(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("flowagent/_medialoop") and n.endswith(".so") for n in names), names
    for needed in ("flowagent/schemas/flow.schema.json", "flowagent/schemas/tests.schema.json",
                   "flowagent/schemas/tools.schema.json", "flowagent/data/minilm-vocab.txt",
                   "flowagent/demo/removals.yaml", "flowagent/web/static/ui.js",
                   "flowagent/asterisk/templates/extensions.conf"):
        assert needed in names, needed
    assert not any(n.startswith(("tests/", "bench/")) for n in names)


def test_the_installed_wheel_validates_and_serves_a_call(fresh_venv: Path,
                                                         tmp_path: Path) -> None:
    bin_dir = fresh_venv / "bin"
    env = dict(os.environ, PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]),
               HF_HUB_OFFLINE="1", FLOWAGENT_API_TOKEN="wheel-token")
    env.pop("PYTHONPATH", None)
    # flowagent comes from the wheel, with its native media loop
    where = _run(bin_dir / "python", "-c", "import flowagent, flowagent._medialoop as m; "
                 "print(flowagent.__file__, m.__file__)", cwd=tmp_path, env=env).stdout
    assert str(fresh_venv) in where and str(ROOT) not in where, where

    shutil.copytree(ROOT / "flows", tmp_path / "flows")
    out = _run(bin_dir / "flowagent", "validate", "flows/", cwd=tmp_path, env=env).stdout
    assert "no errors" in out and "removals.tests.yaml" in out

    # a short call on the offline stack: the flow speaks its greeting and hangs up
    flow = tmp_path / "hello.yaml"
    flow.write_text(
        "flowagent: 1\nname: Hello\nlanguage: en-GB\nstart: hello\nstates:\n"
        "  hello:\n    say: Hello from the installed wheel. Goodbye.\n    end: true\n",
        encoding="utf-8")
    ports = []
    for _ in range(2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    audiosocket, http = f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}"
    log = (tmp_path / "serve.log").open("wb")
    serve = subprocess.Popen(
        [str(bin_dir / "flowagent"), "serve", str(flow), "--audiosocket", audiosocket, "--http",
         http, "--db", str(tmp_path / "calls.db")],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://{http}/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise AssertionError((tmp_path / "serve.log").read_text()[-3000:])
        call = _run(bin_dir / "flowagent", "call", "--to", audiosocket, "--http", http,
                    cwd=tmp_path, env=env, timeout=120)
        text = " ".join((call.stdout + call.stderr).split())
        assert "agent: Hello from the installed wheel. Goodbye." in text, text
        assert "Call ended by agent" in text, text
    finally:
        serve.terminate()
        serve.wait(30)
        log.close()
    assert "offline speech stack loaded" in (tmp_path / "serve.log").read_text()
