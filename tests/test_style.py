"""The code stays ruff- and mypy-clean: checked like any behaviour."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_ruff_lint_and_format() -> None:
    lint = run("ruff", "check", "src", "tests", "scripts", "bench")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    fmt = run("ruff", "format", "--check", "src", "tests", "scripts", "bench")
    assert fmt.returncode == 0, fmt.stdout + fmt.stderr


def test_mypy() -> None:
    done = run("mypy", "src/paylive", "scripts", "bench")
    assert done.returncode == 0, done.stdout + done.stderr
