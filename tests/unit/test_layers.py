"""The core is pure: importing it (and every module under it) loads no I/O library."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import paylive.core

FORBIDDEN = ("asyncio", "starlette", "uvicorn", "redis", "httpx", "websockets")


def _core_modules() -> list[str]:
    return [info.name for info in pkgutil.walk_packages(paylive.core.__path__, "paylive.core.")] + [
        "paylive.core"
    ]


def test_the_core_loads_no_io_library() -> None:
    modules = _core_modules()
    assert "paylive.core.machine" in modules
    probe = (
        "import sys\n"
        f"for name in {modules!r}: __import__(name)\n"
        f"print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "", f"the core loaded {done.stdout.strip()}"
