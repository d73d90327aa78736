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

A command counts from the moment the connection protocol has it whole and hands it a
task (``queue``), not only once that task runs and takes its place (``enter``): on a
busy worker, commands parsed in one turn of the loop wait in its ready queue for the
next, and a bound that did not see them let the queue grow behind it (the door was
never full on the memory engine, whose commands run to the end in one step, while
answers took 100 ms). Counted from the start, the commands waiting are bounded by the
limit too, the rest are refused in the protocol at once, and a command's latency for
the adaptive limit includes its wait in the queue. A queued command counts in its
session's and address's share as well, and is queued only within them and the places
left: one past them holds nothing until the door decides on it, so no client holds
more than its share at any moment (commands pipelined on one connection are all
handed over as they are parsed, and each had held a place of its own).

A bound on places alone lets one turn of the loop start as many commands as there are
free places, and a refusal (written as its connection is read) waits for that turn to
end: on a memory worker at its ceiling the bound stood at 64 from start to end, every
turn ran about 20 ms of commands, and a refusal took 11 to 14 ms (p50) to come back.
So while the worker is refusing (it refused a command within the last
``REFUSING_FOR_S``), a turn also starts at most ``per_turn`` new commands (parsed whole by the
protocol, or sent on a socket); past that the next ones are refused at once, and the
commands a turn starts finish soon after it. A command waiting for Redis or the
provider holds its place but starts nothing: an I/O-bound worker still has all its
places. A worker that refused nothing for that long has no such share: a burst that
fits its free places is taken whole, however many arrive at once. Measured on the
memory worker asked 6,000/s, with 16: 503 p50 4.9 to 5.8 ms and accepted p50 6 ms,
against 10.6 to 17 ms and 20 to 24 ms without, for as many changes done.

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
# How long after its last refusal a worker counts as refusing (see ``per_turn``): half
# the second a refused client is told to wait, so that the share stays on between the
# waves of a flash sale rather than letting a long turn in at each lull.
REFUSING_FOR_S = 0.5


class Queued:
    """A command handed a task but not yet at the door: its place, held since ``since``
    (``time.monotonic()``), counted in the share of its ``session`` and ``address``."""

    __slots__ = ("address", "session", "since")

    def __init__(self, since: float, session: str | None, address: str | None) -> None:
        self.since = since
        self.session = session
        self.address = address


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
        lag_target_s: float = 0.0,
        per_turn: int = 0,
        refusing_for_s: float = REFUSING_FOR_S,
    ) -> None:
        # The limit is fixed, or (with ``adaptive``) follows the commands' measured
        # latency (``limits.gradient``); the shares are of the most it may be.
        self._fixed = limit
        self.adaptive = adaptive
        # The adaptive limit shrinks while the loop's own lag is past this (0: never).
        self.lag_target_s = lag_target_s
        self.retry_after_s = retry_after_s
        # When each command in flight came in, by the task that runs it (the one that
        # calls enter and leave): its latency feeds the adaptive limit.
        self._started: dict[asyncio.Task[Any] | None, float] = {}
        self.per_session = per_session or limit
        self.per_address = per_address or limit
        self.in_flight = 0
        # Commands parsed whole and given a task that has not reached the door yet.
        self._queued: set[Queued] = set()
        # Shown from the start: a fixed bound never changes, so nothing else sets it.
        metrics.IN_FLIGHT_LIMIT.set(self.limit)
        self._sessions: dict[str, int] = {}
        self._addresses: dict[str, int] = {}
        # New commands started in this turn of the loop: at most ``per_turn`` (0: any)
        # until ``_refusing_until`` (``time.monotonic()``).
        self.per_turn = per_turn
        self._this_turn = 0
        self._refusing_until = 0.0
        self._refusing_for_s = refusing_for_s
        self._turn_noted = False

    @classmethod
    def of(cls, settings: AdmissionSettings) -> Admission:
        return cls(
            settings.max_in_flight,
            settings.overload_retry_after_s,
            settings.max_in_flight_per_session,
            settings.max_in_flight_per_address,
            in_flight_limit(settings),
            settings.in_flight_lag_target_ms / 1000,
            settings.max_starts_per_turn if settings.adaptive_in_flight else 0,
        )

    @property
    def limit(self) -> int:
        return self.adaptive.limit if self.adaptive is not None else self._fixed

    @property
    def full(self) -> bool:
        """No place left, or (while refusing) this turn started its share: the next
        command is refused (the connection protocol asks this before it reads a body
        or makes a task, and says ``refused`` when it does)."""
        return self._no_place or self._turn_taken

    @property
    def _no_place(self) -> bool:
        return self.in_flight + len(self._queued) >= self.limit

    @property
    def _turn_taken(self) -> bool:
        return (
            self.per_turn > 0
            and self._this_turn >= self.per_turn
            and time.monotonic() < self._refusing_until
        )

    def refused(self) -> None:
        """A command was refused for want of a place or of the turn's share: the worker
        counts as refusing for ``refusing_for_s`` from now."""
        if self.per_turn > 0:
            self._refusing_until = time.monotonic() + self._refusing_for_s

    def _start(self) -> None:
        """One more command started in this turn."""
        if self.per_turn > 0:
            self._this_turn += 1
            self._note_turn()

    def _note_turn(self) -> None:
        # The count starts again in the next turn: ``call_soon`` runs once the loop has
        # read every connection that was ready in this one.
        if not self._turn_noted:
            self._turn_noted = True
            asyncio.get_running_loop().call_soon(self._new_turn)

    def _new_turn(self) -> None:
        self._this_turn = 0
        self._turn_noted = False

    @property
    def queued(self) -> int:
        return len(self._queued)

    def queue(
        self, since: float, session: str | None = None, address: str | None = None
    ) -> Queued | None:
        """A command of ``session`` from ``address`` parsed whole and handed a task at
        ``since``: it counts from now, in their shares too. None, and nothing held, when
        no place is left or their share is taken (commands pipelined on one connection
        are handed over even then, their answers going out in order): the door decides
        on it when it gets there, as on one that held nothing (``enter`` without
        ``since``)."""
        if self._no_place or self._share_taken(session, address) is not None:
            return None
        held = Queued(since, session, address)
        self._queued.add(held)
        self._take(session, address)
        self._start()
        return held

    def unqueue(self, held: Queued) -> None:
        """The command reached the door, or never will (its connection is gone); once
        is enough, more is harmless."""
        if held in self._queued:
            self._queued.discard(held)
            self._give_back(held.session, held.address)

    def _share_taken(self, session: str | None, address: str | None) -> Refused | None:
        # Its places queued or in flight, both.
        if session is not None and self._sessions.get(session, 0) >= self.per_session:
            return SESSION_SHARE
        if address is not None and self._addresses.get(address, 0) >= self.per_address:
            return ADDRESS_SHARE
        return None

    def _take(self, session: str | None, address: str | None) -> None:
        if session is not None:
            self._sessions[session] = self._sessions.get(session, 0) + 1
        if address is not None:
            self._addresses[address] = self._addresses.get(address, 0) + 1

    def _give_back(self, session: str | None, address: str | None) -> None:
        for counts, key in ((self._sessions, session), (self._addresses, address)):
            if key is not None:
                left = counts.get(key, 0) - 1
                if left > 0:
                    counts[key] = left
                else:
                    counts.pop(key, None)

    def enter(
        self, session: str | None = None, address: str | None = None, since: float | None = None
    ) -> Refused | None:
        """Take a place for one command of ``session`` from ``address`` (that came in at
        ``since``, by default now); the refusal (counted) when the worker is full or
        their share is taken. A command with ``since`` was queued (and counted as a
        start of its turn) by the protocol: only a place is asked of it here."""
        if self._no_place if since is not None else self.full:
            metrics.OVERLOADED.inc()
            self.refused()
            return OVERLOADED
        share = self._share_taken(session, address)
        if share is not None:
            return share
        if since is None:
            self._start()
        self.in_flight += 1
        metrics.IN_FLIGHT.inc()
        if self.adaptive is not None:
            self._started[_task()] = time.monotonic() if since is None else since
        self._take(session, address)
        return None

    def lagged(self, lag: float) -> None:
        """The worker's loop ran ``lag`` seconds late by its own work (``server.looplag``)."""
        if self.adaptive is not None and self.lag_target_s > 0:
            self.adaptive.lagged(lag, self.lag_target_s)
            metrics.IN_FLIGHT_LIMIT.set(self.adaptive.limit)

    def leave(self, session: str | None = None, address: str | None = None) -> None:
        if self.adaptive is not None:
            started = self._started.pop(_task(), None)
            if started is not None:
                self.adaptive.sample(time.monotonic() - started, self.in_flight + len(self._queued))
                metrics.IN_FLIGHT_LIMIT.set(self.adaptive.limit)
        self.in_flight -= 1
        metrics.IN_FLIGHT.dec()
        self._give_back(session, address)


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
