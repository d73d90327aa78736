"""Event-loop lag: how late a timer due every ``interval`` runs on this worker.

A callback that holds the loop (a sweep over every socket, a garbage collection, a
burst of parsing) delays everything else on the worker by as long as it runs; the
lateness of a periodic timer measures exactly that, whatever caused it. Each worker
observes it into ``paylive_loop_lag_seconds`` (labelled with its pid, so that
``/metrics`` keeps the workers apart), which ``paylive load`` reads before and after
its drive to report p99 and max per worker (docs/protocol.md section 5).

A timer handle re-armed from its own callback, not a task: one small callback per
interval, no coroutine and no future.
"""

from __future__ import annotations

import asyncio
import os

from .. import metrics


class LoopLag:
    def __init__(self, interval_ms: int) -> None:
        self._interval = interval_ms / 1000
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        self._observe = metrics.LOOP_LAG.labels(str(os.getpid())).observe

    def start(self) -> None:
        if self._interval <= 0 or self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._arm(self._loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self._interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self._observe(max(0.0, now - self._due))
        self._arm(now)
