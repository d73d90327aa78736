"""The embedded engine for one process: dicts and a heap, nothing to install.

Every method runs without awaiting anything, so each one is atomic on the event
loop: that is the whole concurrency story of this engine.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from collections.abc import Iterator, Mapping, Sequence

from ..core.evolve import evolve
from ..core.session import TERMINAL_STATUSES, Session
from ..settings import EngineSettings
from .base import AuditAdd, Engine, RecordClaim
from .memory_shop import MemoryShop


class _DueSet:
    """Ids with a due time, claimed with a lease: the dict holds the truth, the heap
    finds the due ones (stale heap entries are skipped when they surface)."""

    def __init__(self) -> None:
        self._due: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []

    def __contains__(self, key: str) -> bool:
        return key in self._due

    def __iter__(self) -> Iterator[str]:
        return iter(self._due)

    def set(self, key: str, due: int | None) -> None:
        if due is None:
            self._due.pop(key, None)
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, key))

    def claim(self, now: int, limit: int, lease_ms: int) -> list[str]:
        out: list[str] = []
        while self._heap and self._heap[0][0] <= now and len(out) < limit:
            due, key = heapq.heappop(self._heap)
            if self._due.get(key) != due:
                continue  # superseded by a later set
            self.set(key, now + lease_ms)
            out.append(key)
        return out


class MemoryEngine(MemoryShop, Engine):
    def __init__(self, settings: EngineSettings) -> None:
        super().__init__()
        self._settings = settings
        self._sessions: dict[str, Session] = {}
        self._order: dict[str, None] = {}  # insertion order = creation order
        self._active: dict[str, None] = {}
        self._history: dict[str, deque[bytes]] = {}
        self._first_seq: dict[str, int] = {}
        self._counters: dict[str, int] = {}
        self._timers = _DueSet()
        self._effects = _DueSet()
        self._with_effects: dict[str, None] = {}  # in the order their outbox began
        self._review: dict[str, None] = {}  # in the order they were flagged
        self._purge: deque[tuple[int, str]] = deque()
        self._records: dict[str, tuple[bytes, float]] = {}
        self._expiries: list[tuple[float, str]] = []  # a heap of (expiry, key)
        self._subscribed: set[str | None] = set()
        self._init_shop(settings.deliveries_kept)

    async def ping(self) -> None:
        return None

    @property
    def saves_audit(self) -> bool:
        return True

    # Sessions --------------------------------------------------------------

    async def create(self, session: Session, stats: Mapping[str, int], notice: bytes) -> bool:
        if session.id in self._sessions:
            return False
        self._sessions[session.id] = session
        self._order[session.id] = None
        self._active[session.id] = None
        self._history[session.id] = deque(maxlen=self._settings.history_cap)
        self._first_seq[session.id] = 1
        self._add(stats)
        self._timers.set(session.id, session.next_due())
        if None in self._subscribed:
            self._on_event(None, notice)
        return True

    async def load(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    async def save(
        self,
        session: Session,
        expected_version: int,
        events: Sequence[bytes],
        stats: Mapping[str, int],
        claims: Sequence[RecordClaim] = (),
        audit: AuditAdd | None = None,
    ) -> bool:
        # ``claims`` are left to the caller's ``claim``: here it costs no round trip.
        current = self._sessions.get(session.id)
        if current is None or current.version != expected_version:
            return False
        stored = evolve(session, version=expected_version + 1)
        self._sessions[session.id] = stored
        history = self._history[session.id]
        for payload in events:
            if len(history) == history.maxlen:
                self._first_seq[session.id] += 1
            history.append(payload)
        self._add(stats)
        if audit is not None:
            self._audit_push(audit.entry, audit.kept)
        self._timers.set(session.id, stored.next_due())
        self._effects.set(session.id, stored.next_effect_at())
        if stored.effects and session.id not in self._with_effects:
            self._with_effects[session.id] = None
        if stored.needs_review and not current.needs_review:
            self._review[session.id] = None
        elif not stored.needs_review:
            self._review.pop(session.id, None)
        if stored.status in TERMINAL_STATUSES:
            self._active.pop(session.id, None)
            # A case flagged for review is kept until a person resolves it, whatever
            # the retention: its retention starts when it is resolved.
            ended = current.status not in TERMINAL_STATUSES or current.needs_review
            if ended and not stored.needs_review:
                purge_at = stored.updated_at + self._settings.retention_after_end_ms
                self._purge.append((purge_at, session.id))
        for payload in events:
            if session.id in self._subscribed:
                self._on_event(session.id, payload)
            if None in self._subscribed:
                self._on_event(None, payload)
        return True

    async def history(self, session_id: str, since: int) -> list[bytes] | None:
        history = self._history.get(session_id)
        if history is None:
            return None
        first = self._first_seq[session_id]
        if since + 1 < first:
            return None
        return list(history)[since + 1 - first :]

    async def list_sessions(self, active_only: bool, limit: int) -> list[Session]:
        ids = self._active if active_only else self._order
        out: list[Session] = []
        for session_id in reversed(ids):
            if len(out) >= limit:
                break
            out.append(self._sessions[session_id])
        return out

    async def counters(self) -> dict[str, int]:
        # The review counter is what the review list holds, never a running sum.
        counters = {k: v for k, v in self._counters.items() if k != "needs_review"}
        if self._review:
            counters["needs_review"] = len(self._review)
        return counters

    async def forget_counters(self, names: Sequence[str]) -> None:
        for name in names:
            self._counters.pop(name, None)

    async def list_review(self, limit: int) -> list[Session]:
        return [self._sessions[i] for i in list(reversed(self._review))[: max(0, limit)]]

    async def list_with_effects(self, pending_only: bool, limit: int) -> list[Session]:
        out: list[Session] = []
        for session_id in reversed(self._with_effects):
            if len(out) >= limit:
                break
            session = self._sessions[session_id]
            if not pending_only or session.pending_effects:
                out.append(session)
        return out

    async def oldest_pending_effect(self) -> int | None:
        times = [e.created_at for sid in self._effects for e in self._sessions[sid].pending_effects]
        return min(times) if times else None

    def _add(self, stats: Mapping[str, int]) -> None:
        for name, value in stats.items():
            self._counters[name] = self._counters.get(name, 0) + value

    # Timers ----------------------------------------------------------------

    async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[str]:
        self._purge_ended(now)
        return self._timers.claim(now, limit, lease_ms)

    async def schedule(self, session_id: str, due: int | None) -> None:
        if session_id in self._sessions:
            self._timers.set(session_id, due)

    async def claim_effects(self, now: int, limit: int, lease_ms: int) -> list[str]:
        return self._effects.claim(now, limit, lease_ms)

    async def schedule_effects(self, session_id: str, due: int | None) -> None:
        if session_id in self._sessions:
            self._effects.set(session_id, due)

    def _purge_ended(self, now: int) -> None:
        kept: list[tuple[int, str]] = []
        while self._purge and self._purge[0][0] <= now:
            _, session_id = self._purge.popleft()
            session = self._sessions.get(session_id)
            if session is None or session.needs_review:
                continue  # gone, or kept for review: resolving it queues it again
            if session_id in self._effects:
                # Its outbox still owes the provider a call: keep it, look again later.
                kept.append((now + self._settings.retention_after_end_ms, session_id))
                continue
            for table in (
                self._sessions,
                self._order,
                self._history,
                self._first_seq,
                self._with_effects,
                self._review,
            ):
                table.pop(session_id, None)  # type: ignore[attr-defined]
            self._timers.set(session_id, None)
        self._purge.extend(kept)
        # Expired records go by their heap, not by a look at every record: there are
        # as many as idempotency keys kept, and this runs every timer poll (a scan of
        # them all was 2-3 % of a worker's samples under load).
        clock = time.monotonic()
        expiries = self._expiries
        while expiries and expiries[0][0] <= clock:
            expires, key = heapq.heappop(expiries)
            held = self._records.get(key)
            if held is not None and held[1] == expires:
                del self._records[key]

    # Records ---------------------------------------------------------------

    def _live(self, key: str) -> bytes | None:
        held = self._records.get(key)
        if held is None:
            return None
        if held[1] <= time.monotonic():
            del self._records[key]
            return None
        return held[0]

    def _keep(self, key: str, value: bytes, ttl_ms: int) -> None:
        expires = time.monotonic() + ttl_ms / 1000
        self._records[key] = (value, expires)
        # A key kept again (or deleted) leaves its earlier entry here, skipped when it
        # surfaces; should such entries come to outnumber the records, a rebuild
        # drops them.
        heapq.heappush(self._expiries, (expires, key))
        if len(self._expiries) > 2 * len(self._records) + 1024:
            self._expiries = [(exp, k) for k, (_, exp) in self._records.items()]
            heapq.heapify(self._expiries)

    async def put_if_absent(self, key: str, value: bytes, ttl_ms: int) -> bytes | None:
        held = self._live(key)
        if held is not None:
            return held
        self._keep(key, value, ttl_ms)
        return None

    async def put(self, key: str, value: bytes, ttl_ms: int) -> None:
        self._keep(key, value, ttl_ms)

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def delete(self, key: str) -> None:
        self._records.pop(key, None)

    # Fan-out ---------------------------------------------------------------

    async def subscribe(self, session_id: str | None) -> None:
        self._subscribed.add(session_id)

    async def unsubscribe(self, session_id: str | None) -> None:
        self._subscribed.discard(session_id)
