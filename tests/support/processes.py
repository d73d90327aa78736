"""Stopping the processes the tests start: a signal, a bounded wait, then SIGKILL."""

from __future__ import annotations

import signal
import subprocess
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from . import zygote


def stop(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str] | zygote.Child | None,
    sig: int = signal.SIGTERM,
    timeout: float = 5.0,
) -> int | None:
    """Send ``sig`` to ``proc`` when it runs, wait up to ``timeout`` seconds for it to
    exit, else kill it; its exit code (None when there is no process)."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(5)
    return proc.returncode
