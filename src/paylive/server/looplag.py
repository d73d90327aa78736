"""Event-loop lag: how late a timer due every ``interval`` runs on this worker.

A callback that holds the loop (a sweep over every socket, a garbage collection, a
burst of parsing) delays everything else on the worker by as long as it runs; the
lateness of a periodic timer measures exactly that, whatever caused it. Each worker
observes it into ``paylive_loop_lag_seconds`` (labelled with its pid, so that
``/metrics`` keeps the workers apart), which ``paylive load`` reads before and after
its drive to report p99 and max per worker (docs/protocol.md section 5).

On a shared machine a worker also waits for a core: a timer is late because the
kernel ran someone else, not because the loop was held. Where Linux says how long the
worker's thread waited on a run queue (``/proc/thread-self/schedstat``), each tick's
lag less that wait over the same window is observed apart, as
``paylive_loop_lag_own_seconds{worker}``: the part of the lag the worker's own work
made.

Whoever holds the worker's admission listens (``on_own_lag``): the loop's own lag
is a signal for the bound on commands in flight (``limits.gradient``).

A timer handle re-armed from its own callback, not a task: one small callback per
interval, no coroutine and no future. The garbage collector is one known cause, so
each collection's pause is observed too (``paylive_gc_pause_seconds{worker,
generation}``), from ``gc.callbacks``.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import Callable
from typing import Any

from .. import metrics


class LoopLag:
    def __init__(self, interval_ms: int, on_own_lag: Callable[[float], None] | None = None) -> None:
        self._interval = interval_ms / 1000
        self._on_own_lag = on_own_lag
        self._handle: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._due = 0.0
        pid = str(os.getpid())
        self._observe = metrics.LOOP_LAG.labels(pid).observe
        self._observe_own = metrics.LOOP_LAG_OWN.labels(pid).observe
        self._schedstat: int | None = None  # a file descriptor
        self._waited = 0
        self._gc_observe = [metrics.GC_PAUSE.labels(pid, str(g)).observe for g in range(3)]
        self._gc_started = 0.0

    def start(self) -> None:
        if self._interval <= 0 or self._handle is not None:
            return
        self._loop = asyncio.get_running_loop()
        try:
            # The event loop's own thread: the one this runs on.
            self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._schedstat = None
        self._waited = self._run_queue_ns()
        self._arm(self._loop.time())
        gc.callbacks.append(self._gc)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._gc in gc.callbacks:
            gc.callbacks.remove(self._gc)
        if self._schedstat is not None:
            os.close(self._schedstat)
            self._schedstat = None

    def _run_queue_ns(self) -> int:
        """Nanoseconds this thread has waited on a run queue so far (0: unknown)."""
        stat = self._schedstat
        if stat is None:
            return 0
        try:
            # One pread a tick: a buffered file's seek and read made five system calls.
            return int(os.pread(stat, 128, 0).split()[1])
        except (OSError, ValueError, IndexError):
            return 0

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            self._gc_observe[info["generation"]](time.perf_counter() - self._gc_started)
            self._gc_started = 0.0

    def _arm(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + self._interval
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        lag = max(0.0, now - self._due)
        self._observe(lag)
        waited = self._run_queue_ns()
        own = lag
        if self._schedstat is not None:
            # The wait for a core since the last tick, at most all of the lag.
            own = max(0.0, lag - (waited - self._waited) / 1e9)
            self._observe_own(own)
        self._waited = waited
        if self._on_own_lag is not None:
            self._on_own_lag(own)
        self._arm(now)
