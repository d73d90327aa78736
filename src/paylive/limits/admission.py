"""The door's bookkeeping: commands in flight on this worker, and the refusal of one
too many.

Overload is shed at the door, by what is already in flight, not by how long a
request has waited: past ``max_in_flight`` commands being worked on by this worker,
a new one is refused at once (``overloaded``), before it takes an idempotency key or
waits for an engine connection. So a refused command changes nothing, and the work
already accepted keeps the worker's time and is delivered on time. No one holds every
place either: one session (one client secret) holds at most
``max_in_flight_per_session`` of them and one client address at most
``max_in_flight_per_address``; past its share a command is refused ``rate_limited``,
and the others still get in.

This is the count and the refusal as a ``Refused``; how a refusal goes over the wire
(the prepared HTTP answers, ``Retry-After``, the socket's error) is the edge's
(``web.admission``).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .. import metrics
from ..core.protocol import ErrorCode
from ..errors import Refused
from ..settings import AdmissionSettings
from .gradient import GradientLimit

OVERLOADED = Refused(ErrorCode.OVERLOADED, "this worker has too much work in flight; retry shortly")
SESSION_SHARE = Refused(
    ErrorCode.RATE_LIMITED, "this session has too many commands in flight; wait for them"
)
ADDRESS_SHARE = Refused(
    ErrorCode.RATE_LIMITED, "this address has too many commands in flight; wait for them"
)


class Admission:
    """Commands in flight with a limit, and each session's and address's share of it
    (one per worker). ``retry_after_s`` is how long a refused client is told to wait."""

    def __init__(
        self,
        limit: int,
        retry_after_s: int,
        per_session: int | None = None,
        per_address: int | None = None,
        adaptive: GradientLimit | None = None,
    ) -> None:
        # The limit is fixed, or (with ``adaptive``) follows the commands' measured
        # latency (``limits.gradient``); the shares are of the most it may be.
        self._fixed = limit
        self.adaptive = adaptive
        self.retry_after_s = retry_after_s
        # When each command in flight came in, by the task that runs it (the one that
        # calls enter and leave): its latency feeds the adaptive limit.
        self._started: dict[asyncio.Task[Any] | None, float] = {}
        self.per_session = per_session or limit
        self.per_address = per_address or limit
        self.in_flight = 0
        # Shown from the start: a fixed bound never changes, so nothing else sets it.
        metrics.IN_FLIGHT_LIMIT.set(self.limit)
        self._sessions: dict[str, int] = {}
        self._addresses: dict[str, int] = {}

    @classmethod
    def of(cls, settings: AdmissionSettings) -> Admission:
        return cls(
            settings.max_in_flight,
            settings.overload_retry_after_s,
            settings.max_in_flight_per_session,
            settings.max_in_flight_per_address,
            in_flight_limit(settings),
        )

    @property
    def limit(self) -> int:
        return self.adaptive.limit if self.adaptive is not None else self._fixed

    @property
    def full(self) -> bool:
        """No place left: the next command is refused (the connection protocol asks
        this before it reads a body or makes a task)."""
        return self.in_flight >= self.limit

    def enter(self, session: str | None = None, address: str | None = None) -> Refused | None:
        """Take a place for one command of ``session`` from ``address``; the refusal
        (counted) when the worker is full or their share is taken."""
        if self.full:
            metrics.OVERLOADED.inc()
            return OVERLOADED
        if session is not None and self._sessions.get(session, 0) >= self.per_session:
            return SESSION_SHARE
        if address is not None and self._addresses.get(address, 0) >= self.per_address:
            return ADDRESS_SHARE
        self.in_flight += 1
        metrics.IN_FLIGHT.inc()
        if self.adaptive is not None:
            self._started[_task()] = time.monotonic()
        if session is not None:
            self._sessions[session] = self._sessions.get(session, 0) + 1
        if address is not None:
            self._addresses[address] = self._addresses.get(address, 0) + 1
        return None

    def leave(self, session: str | None = None, address: str | None = None) -> None:
        if self.adaptive is not None:
            started = self._started.pop(_task(), None)
            if started is not None:
                self.adaptive.sample(time.monotonic() - started, self.in_flight)
                metrics.IN_FLIGHT_LIMIT.set(self.adaptive.limit)
        self.in_flight -= 1
        metrics.IN_FLIGHT.dec()
        for counts, key in ((self._sessions, session), (self._addresses, address)):
            if key is not None:
                left = counts.get(key, 0) - 1
                if left > 0:
                    counts[key] = left
                else:
                    counts.pop(key, None)


def in_flight_limit(settings: AdmissionSettings) -> GradientLimit | None:
    """The adaptive bound on commands in flight (None: the fixed ``max_in_flight``). It
    starts at half the maximum and finds its level from the commands' latency."""
    if not settings.adaptive_in_flight:
        return None
    high = settings.max_in_flight
    low = min(settings.min_in_flight, high)
    return GradientLimit(initial=max(low, high // 2), min_limit=low, max_limit=high)


def _task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None
