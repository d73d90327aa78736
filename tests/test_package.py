"""The package as a user gets it: ``python -m build`` makes a wheel and an sdist, the
wheel installs in a fresh virtual environment, and the installed ``paylive serve``
answers ``/healthz``, importing paylive from that environment only. Marked
``package`` (``-m 'not package'`` skips it).

The build runs without isolation (hatchling is in the test extra) and the fresh
environment borrows the test environment's dependencies through a path file instead
of downloading them again: resolving and installing them took about 70 of this test's
90 s of CPU, on a 2-core machine the whole suite shares. The dependencies the wheel
declares are checked against that environment (``importlib.metadata``), so a
dependency the wheel forgets to declare still fails here.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from .support import tls
from .support.ports import free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.package


def run(args: list[str], timeout: float, cwd: Path = ROOT) -> str:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(args)}:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done.stdout


def test_the_built_wheel_installs_in_a_fresh_venv_and_serves(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)],
        timeout=300,
    )
    wheels = list(dist.glob("paylive-*.whl"))
    sdists = list(dist.glob("paylive-*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())

    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = wheel.read(metadata).decode()
    assert "paylive/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "paylive/client/paylive.js" in names and "paylive/docs/protocol.md" in names
    assert "Classifier: Typing :: Typed" in meta
    # paylive subclasses uvicorn's internals: the dependency has an upper bound.
    assert re.search(r"^Requires-Dist: uvicorn<[0-9.]+,", meta, re.M), meta[:2000]
    with tarfile.open(sdists[0]) as sdist:
        top = {Path(n).relative_to(Path(n).parts[0]).as_posix() for n in sdist.getnames()}
    assert {"LICENSE", "CHANGELOG.md", "README.md", "src/paylive/py.typed"} <= top
    assert not any("node_modules" in n for n in top)

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], timeout=120)
    python = venv / "bin" / "python"
    # The test environment's packages, but not its editable paylive: a path added by a
    # .pth line is not a site directory, so the editable install's own .pth is not run.
    site = Path(sysconfig.get_paths()["purelib"])
    fresh = venv / site.relative_to(Path(sys.prefix))
    (fresh / "borrowed.pth").write_text(f"{site}\n")
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        # Installed even where the borrowed packages hold a (non-editable) paylive, as
        # `pip install .` leaves one: the fresh environment's own copy comes first.
        + ["--no-index", "--ignore-installed", str(wheels[0])],
        timeout=120,
    )
    declared = [
        re.split(r"[<>=!~;\[ ]", line.split(":", 1)[1].strip())[0]
        for line in meta.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    ]
    assert "starlette" in declared and "uvicorn" in declared, declared
    probe = "import importlib.metadata as m, sys; [m.version(n) for n in sys.argv[1:]]"
    run([str(python), "-c", probe, *declared], timeout=30, cwd=tmp_path)

    # From outside the checkout, so that nothing but the installed package is imported.
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYLIVE_", "PYTHON"))}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(venv / "bin" / "paylive"), "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        answer = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/healthz", timeout=1, verify=tls.CONTEXT
                )
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert answer is not None and answer.status_code == 200, log.read_text()
        where = run(
            [str(python), "-c", "import paylive, sys; print(paylive.__file__)"],
            timeout=30,
            cwd=tmp_path,
        )
        assert str(venv) in where, where
        helped = run([str(venv / "bin" / "paylive"), "serve", "--help"], timeout=30)
        assert "(default: 8000)" in helped and "PAYLIVE_REDIS_URL" in helped
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
