"""The live line of ``paylive load`` while it drives: time done out of ``--duration``.

Shown only when stdout and stderr are terminals (a run piped into a file or a CI log
stays as quiet as before); drawn on stderr beside the phase messages and removed when
the drive ends, so the report that follows is unchanged.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

REFRESH_S = 0.25


def wanted(out: TextIO | None = None, err: TextIO | None = None) -> bool:
    out = out or sys.stdout
    err = err or sys.stderr
    return out.isatty() and err.isatty()


@contextmanager
def drive_progress(
    duration_s: float, label: str, enabled: bool | None = None, stream: TextIO | None = None
) -> Iterator[None]:
    """A progress bar of the drive, ended by leaving the block (or by ``duration_s``
    and a bound of a minute more, whichever comes first: it never outlives the run)."""
    if not (wanted() if enabled is None else enabled) or duration_s <= 0:
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(file=stream or sys.stderr, force_terminal=enabled or None)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        auto_refresh=False,
    )
    task = progress.add_task(label, total=duration_s)
    done = threading.Event()
    started = time.monotonic()

    def tick() -> None:
        bound = started + duration_s + 60
        while not done.wait(REFRESH_S) and time.monotonic() < bound:
            elapsed = min(duration_s, time.monotonic() - started)
            progress.update(task, completed=elapsed)
            progress.refresh()

    with progress:
        ticker = threading.Thread(target=tick, name="paylive-load-progress", daemon=True)
        ticker.start()
        try:
            yield
        finally:
            done.set()
            ticker.join(2)
