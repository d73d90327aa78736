"""One socket's delivery order: durable events in ``seq`` order, with no gaps.

A socket joins, is caught up (a snapshot or a replay up to some seq) and only then
goes live; what its channel delivers meanwhile is held. Once live, a durable event
at ``last_seq + 1`` is passed on at once; one further ahead is kept aside and
reported as a gap, for the caller to fill from the session history (``deliver``
again) or to end with a snapshot (``reset``); a duplicate or older one is dropped.
Events that are not durable (countdowns, admin notices) and every event of an
unordered stream (an admin feed, which interleaves all sessions) pass straight on.

Pure logic: the hub's subscriber subclasses ``SeqOrder`` and says in ``push`` what
passing an event on means (queueing it for its socket).
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar


class Sequenced(Protocol):
    @property
    def seq(self) -> int | None: ...

    @property
    def durable(self) -> bool: ...


E = TypeVar("E", bound=Sequenced)


class SeqOrder(Generic[E]):
    """The ordering state of one stream of events; ``push`` receives them in order."""

    # Thousands of these live as long as their sockets: no __dict__, and the held
    # events and those ahead only exist while there are some.
    __slots__ = ("ordered", "last_seq", "live", "_held", "_ahead")

    def __init__(self, ordered: bool) -> None:
        # An unordered stream still waits for its catch-up, then passes everything on.
        self.ordered = ordered
        self.last_seq = -1
        self.live = False
        self._held: list[E] | None = None
        self._ahead: dict[int, E] | None = None

    def push(self, event: E) -> None:
        """Pass one event on; called in order. Subclasses say what that means."""
        raise NotImplementedError

    def deliver(self, event: E) -> bool:
        """Take a channel message; True when it revealed a gap to fill."""
        if not self.live:
            if self._held is None:
                self._held = []
            self._held.append(event)
            return False
        seq = event.seq
        if not self.ordered or not event.durable or seq is None:
            self.push(event)
            return False
        if seq <= self.last_seq:
            return False
        if seq > self.last_seq + 1:
            if self._ahead is None:
                self._ahead = {}
            self._ahead[seq] = event
            return True
        self.push(event)
        self.last_seq = seq
        self._drain()
        return False

    @property
    def has_gap(self) -> bool:
        """Events are waiting for an earlier one that has not arrived."""
        return bool(self._ahead)

    def begin(self, last_seq: int) -> bool:
        """Go live after the catch-up (snapshot or replay) up to ``last_seq``; True
        when what was held meanwhile revealed a gap."""
        self.last_seq = last_seq
        self.live = True
        held, self._held = self._held or (), None
        gap = False
        for event in held:
            gap |= self.deliver(event)
        return gap

    def reset(self, snapshot: E, seq: int) -> None:
        """Start over from ``snapshot`` of the state at ``seq`` (after a gap that the
        history cannot fill, or an outage): what it covers is dropped."""
        self.push(snapshot)
        self.last_seq = max(self.last_seq, seq)
        if self._ahead:
            for stale in [s for s in self._ahead if s <= self.last_seq]:
                del self._ahead[stale]
        self._drain()

    def _drain(self) -> None:
        ahead = self._ahead
        if ahead is None:
            return
        while self.last_seq + 1 in ahead:
            self.last_seq += 1
            self.push(ahead.pop(self.last_seq))
        if not ahead:
            self._ahead = None
