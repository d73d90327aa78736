"""What the generator knows of each session and admin feed, and what each of them saw.

Plain values with the accounting rules of BENCHMARKS.md ("What the generator does")
as methods: no sockets and no event loop, so the rules are tested on their own.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..core.protocol import DURABLE_TYPES

if TYPE_CHECKING:
    import asyncio

    from websockets.asyncio.client import ClientConnection


class Tracked:
    """One payment session: what the driver knows of it, and what its observer saw."""

    __slots__ = (
        "id",
        "secret",
        "status",
        "attempt",
        "retry_at",
        "seq",
        "strikes",
        "states",
        "seen",
        "base",
        "last",
        "gaps",
        "disorder",
        "observed",
        "final",
        "retired",
        "missed",
    )

    def __init__(self, body: Mapping[str, Any]) -> None:
        self.id: str = body["id"]
        self.secret: str = body["client_secret"]
        self.status = "created"
        self.attempt = 0
        self.retry_at: int | None = None
        self.seq = 0
        self.strikes = 0
        self.states: set[int] = set()  # seqs reached by the driver's commands
        self.seen: set[int] = set()  # durable seqs the socket delivered, or seqs a poll showed
        self.base: int | None = None  # seq of the first snapshot: events after it are owed
        self.last = -1  # the highest durable seq received in order
        self.gaps = 0
        self.disorder = 0
        self.missed = 0  # poll mode: seq jumps of more than one
        self.observed = False  # the customer watched this session (socket open or polled)
        self.final: int | None = None  # the server's own seq after the drive
        self.retired = False
        self.apply(body)

    def apply(self, body: Mapping[str, Any]) -> None:
        """Take the session from a command's answer (or a creation)."""
        seq = int(body.get("seq", self.seq))
        if seq < self.seq:
            return  # an older answer overtaken by a newer one
        if seq > self.seq:
            self.states.add(seq)
        self.seq = seq
        self.status = body.get("status", self.status)
        self.attempt = int(body.get("attempt") or 0)
        self.retry_at = body.get("retry_at")

    def observe(self, message: Mapping[str, Any], received_ms: float) -> float | None:
        """Account one server message on the session's socket; the delivery latency in ms
        when it is a durable event (in order or not), else None."""
        kind = message.get("type")
        if kind in DURABLE_TYPES:
            seq = int(message["seq"])
            latency = received_ms - float(message.get("ts") or 0)
            if self.base is None:
                self.base = seq - 1  # a replay with no snapshot before it
            if seq <= self.last:
                self.disorder += 1  # a duplicate, or out of order: never allowed
                return latency
            if self.last >= 0 and seq > self.last + 1:
                self.gaps += seq - self.last - 1
            self.last = seq
            self.seen.add(seq)
            return latency
        if kind == "snapshot":
            seq = int(message["seq"])
            if self.base is None:
                self.base = seq
            # A snapshot after a resync stands for the events it skipped; they
            # stay unreceived, so they count as lost.
            self.last = max(self.last, seq)
        return None

    def observe_poll(self, seq: int) -> bool:
        """Account a poll that showed ``seq``; True when it showed a new state."""
        self.observed = True
        if seq <= self.last:
            return False
        self.missed += seq - self.last - 1
        self.last = seq
        self.seen.add(seq)
        return True


class Customer:
    """One simulated checkout page: a session and its socket (or its poll timer)."""

    __slots__ = ("session", "conn", "reader", "closing", "reconnects", "next_session")

    def __init__(self, session: Tracked) -> None:
        self.session = session
        self.conn: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.closing = False
        self.reconnects = 0
        self.next_session: Tracked | None = None


class FeedRecord:
    """What one admin feed saw: every session's durable events, each in order once."""

    __slots__ = ("types", "per_session", "disorder", "closed_code")

    def __init__(self) -> None:
        self.types: Counter[str] = Counter()
        self.per_session: dict[str, list[int]] = {}  # id -> [last seq, distinct received]
        self.disorder = 0
        self.closed_code: int | None = None

    def observe(self, message: Mapping[str, Any], received_ms: float) -> float | None:
        """Account one admin message; the latency in ms when it is a durable event."""
        kind = str(message.get("type"))
        self.types[kind] += 1
        if kind not in DURABLE_TYPES:
            return None
        seq = int(message["seq"])
        entry = self.per_session.setdefault(str(message["session"]), [0, 0])
        if seq <= entry[0]:
            self.disorder += 1
        else:
            entry[0] = seq
            entry[1] += 1
        return received_ms - float(message.get("ts") or 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "types": dict(self.types),
            "out_of_order": self.disorder,
            "closed_code": self.closed_code,
            "received": {sid: entry[1] for sid, entry in self.per_session.items()},
        }


class Roster:
    """Every session this process made, who watches which, and which are free to drive."""

    def __init__(self) -> None:
        self.sessions: list[Tracked] = []  # retired or not
        self.customers: list[Customer] = []
        self.owner: dict[str, Customer] = {}
        self.ready: deque[Tracked] = deque()  # idle sessions, driven round robin
        self.driving = False  # while the drive lasts, retired sessions are replaced

    def add(self, session: Tracked) -> None:
        self.sessions.append(session)

    def watch(self, customer: Customer, session: Tracked) -> None:
        """``customer`` now watches ``session``, which may be driven."""
        self.owner[session.id] = customer
        self.ready.append(session)
