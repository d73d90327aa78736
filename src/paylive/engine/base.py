"""The engine interface, by job, and the engine that does all four.

- ``SessionStore``: sessions with compare-and-set on their ``version``, each
  session's durable events for replay, the admin listings and the summary counters.
  ``save`` is one atomic step: a new state is stored (its outbox of gateway effects
  included), its events appended to the history and published together, or nothing
  happens.
- ``TimerStore``: the deadlines and expiries, and the due times of outbox effects,
  each claimed by one worker at a time.
- ``RecordStore``: short-lived small records (idempotency keys, seen webhook ids,
  the sandbox ledger).
- ``FanOut``: subscribing to a session's (or the admin) channel, and the listeners
  its events and resyncs go to.
- ``ShopStore``: the merchant events log and the webhook delivery records
  (docs/protocol.md section 6); the events themselves wait in the session's
  outbox, saved with it like gateway effects.

``Engine`` is all five plus a lifecycle; the memory and Redis engines implement it.
Code that needs one job takes that interface (the sandbox and the idempotency
records take a ``RecordStore``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..core.session import Session
from ..errors import PayliveError

# (session id or None for the admin channel, encoded event bytes)
EventListener = Callable[[str | None, bytes], None]
# Called after the engine lost its subscription and got it back: events may be missed.
ResyncListener = Callable[[], None]


class EngineUnavailable(PayliveError):
    """The engine cannot be reached; the API answers 503 and sockets stay open."""


@dataclass(frozen=True)
class RecordClaim:
    """A ``RecordStore.claim`` asked for ahead, with a save (see ``SessionStore.save``)."""

    key: str
    value: bytes
    ttl_ms: int
    unless: str | None = None


@dataclass(frozen=True)
class AuditAdd:
    """An ``audit_add`` asked for with a save (see ``SessionStore.save``)."""

    entry: bytes
    kept: int


class SessionStore(ABC):
    @property
    def saves_audit(self) -> bool:
        """Whether ``save`` adds its ``audit`` entry to the trail of every session in
        the same atomic step (see ``save``)."""
        return False

    @abstractmethod
    async def create(self, session: Session, stats: Mapping[str, int], notice: bytes) -> bool:
        """Store a new session; ``notice`` goes to the admin channel only. False, and
        nothing changed, when a session with this id is stored already: a keyed create
        names its session after the request, and one still on its way after its retry
        made the session must not replace it, nor be listed, counted or timed in its
        place (its ``created_at`` and expiry are its own)."""

    async def finish_create(
        self, session: Session, stats: Mapping[str, int], notice: bytes
    ) -> None:
        """Complete the create of ``session``, as stored (version 0), if it stopped
        inside the engine: nothing where a create is one atomic step (the memory
        engine, one Redis); on Redis Cluster its second step, once."""
        return None

    @abstractmethod
    async def load(self, session_id: str) -> Session | None: ...

    async def load_for_update(self, session_id: str) -> Session | None:
        """The session to decide a command on. It may be a little stale (an engine may
        keep a copy), because ``save`` compares the version: reads that must be
        current use ``load``."""
        return await self.load(session_id)

    @abstractmethod
    async def save(
        self,
        session: Session,
        expected_version: int,
        events: Sequence[bytes],
        stats: Mapping[str, int],
        claims: Sequence[RecordClaim] = (),
        audit: AuditAdd | None = None,
    ) -> bool:
        """Store ``session`` (its version bumped) if the stored version is still
        ``expected_version``, append ``events`` to its history, publish them on its
        channel and the admin channel, add ``stats`` to the counters, set its timer to
        ``session.next_due()`` and its effect due time to ``session.next_effect_at()``,
        and index its outbox and its review flag for the listings below. False, and
        nothing changed, when the version moved. A session is kept while its outbox
        owes anything (``session.owes``: a pending effect or a merchant event not yet
        delivered), and while it is flagged ``needs_review``, however long ago it
        ended: a case for review stays listed and resolvable until a person resolves
        it, and its retention starts then.

        ``claims``: records the caller will ``claim`` right after a save that wins (the
        sandbox's ledger entry of a charge the decision asks for). An engine may make
        them in the same step, only when the save wins, and answer the next ``claim``
        of each (same key, value, ttl and blocker) on this engine from that, once,
        instead of another round trip; or ignore them. Either way the caller's
        ``claim`` gets the answer it would have got a moment earlier.

        ``audit``: the audit entry of the action this save records (it is in
        ``session.audit`` too). An engine whose ``saves_audit`` is true adds it to the
        trail of every session (as ``audit_add``) in the same step, only when the save
        wins, so that no crash after the save can leave it out; any other ignores it,
        and the caller adds it after the save."""

    @abstractmethod
    async def history(self, session_id: str, since: int) -> list[bytes] | None:
        """Every durable event with seq > ``since`` in order, or None when any of them
        is no longer held (then the caller sends a snapshot, never a partial replay)."""

    @abstractmethod
    async def list_sessions(self, active_only: bool, limit: int) -> list[Session]:
        """Newest first."""

    @abstractmethod
    async def counters(self) -> dict[str, int]: ...

    @abstractmethod
    async def forget_counters(self, names: Sequence[str]) -> None:
        """Delete these counters (the chart's minutes past its window)."""

    @abstractmethod
    async def list_review(self, limit: int) -> list[Session]:
        """Sessions flagged ``needs_review``, most recently flagged first."""

    @abstractmethod
    async def list_with_effects(self, pending_only: bool, limit: int) -> list[Session]:
        """Sessions whose outbox holds an effect (with ``pending_only``, a pending one),
        the most recent outbox first."""

    @abstractmethod
    async def oldest_pending_effect(self) -> int | None:
        """When the oldest effect still pending was decided (epoch ms), if any."""


class TimerStore(ABC):
    @abstractmethod
    async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[str]:
        """Sessions whose timer is due at ``now``. Each is leased to this caller for
        ``lease_ms`` (pushed forward), so that only one worker fires it; a save sets the
        timer afresh, and a worker that dies mid-fire loses nothing but the lease."""

    @abstractmethod
    async def schedule(self, session_id: str, due: int | None) -> None:
        """Set (or with None, clear) a session's timer."""

    @abstractmethod
    async def claim_effects(self, now: int, limit: int, lease_ms: int) -> list[str]:
        """Sessions with an outbox effect due at ``now``, each leased to this caller for
        ``lease_ms`` exactly as timers are; a save sets the due time afresh from the
        session's outbox."""

    @abstractmethod
    async def schedule_effects(self, session_id: str, due: int | None) -> None:
        """Set (or with None, clear) a session's effect due time."""


@dataclass(frozen=True)
class Claim:
    """What ``RecordStore.claim`` found: the blocker set (nothing stored), or the value
    the record already held (nothing stored), or neither (stored)."""

    blocked: bool = False
    held: bytes | None = None


class RecordStore(ABC):
    @abstractmethod
    async def put_if_absent(self, key: str, value: bytes, ttl_ms: int) -> bytes | None:
        """Store ``value`` unless ``key`` holds one: None when stored, else the value held."""

    async def claim(
        self,
        key: str,
        value: bytes,
        ttl_ms: int,
        unless: str | None = None,
        also: tuple[str, bytes] | None = None,
    ) -> Claim:
        """``put_if_absent``, refused while ``unless`` holds a value, and when stored,
        ``also`` stored too unless it is held: one decision that an engine may make in
        one round trip (Redis on one node: one script). This default makes the calls
        one by one, which on the memory engine is just as atomic (nothing awaits)."""
        if unless is not None and await self.get(unless) is not None:
            return Claim(blocked=True)
        held = await self.put_if_absent(key, value, ttl_ms)
        if held is None and also is not None:
            await self.put_if_absent(also[0], also[1], ttl_ms)
        return Claim(held=held)

    @abstractmethod
    async def put(self, key: str, value: bytes, ttl_ms: int) -> None: ...

    @abstractmethod
    async def get(self, key: str) -> bytes | None: ...

    @abstractmethod
    async def delete(self, key: str) -> None: ...


class FanOut(ABC):
    def __init__(self) -> None:
        self._on_event: EventListener = lambda _session, _payload: None
        self._on_resync: ResyncListener = lambda: None

    def set_listeners(self, on_event: EventListener, on_resync: ResyncListener) -> None:
        self._on_event = on_event
        self._on_resync = on_resync

    @property
    def subscription_healthy(self) -> bool:
        """False while the fan-out subscription is down (readiness reports it)."""
        return True

    @abstractmethod
    async def subscribe(self, session_id: str | None) -> None:
        """Start receiving a session's events (None: the admin channel) in ``on_event``."""

    @abstractmethod
    async def unsubscribe(self, session_id: str | None) -> None: ...


class ShopStore(ABC):
    """The merchant events log, numbered once per event id (the events API and the
    archive read it), and the webhook delivery records the admin API lists."""

    @abstractmethod
    async def log_append(self, entries: Sequence[tuple[str, int, bytes]]) -> list[int]:
        """Append (event id, created ms, record) entries; return their cursors. An id
        already held keeps its cursor and record, so appending again is harmless.
        Cursors only grow, also across a log lost (an engine restarted empty): a new
        log's first cursor is above the clock's floor (``log_floor``), not 1."""

    @abstractmethod
    async def log_read(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """(cursor, record) of the entries after ``after``, in cursor order."""

    @abstractmethod
    async def log_first(self) -> int:
        """The lowest cursor held (the next one to be given when the log is empty; 1
        before a new Redis gave any, its first then coming from the clock)."""

    @abstractmethod
    async def log_get(self, event_id: str) -> bytes | None: ...

    @abstractmethod
    async def log_trim(self, before_ms: int, upto: int, limit: int) -> int:
        """Drop entries created before ``before_ms`` with a cursor up to ``upto``
        (the archive's mark, when there is an archive); oldest first."""

    @abstractmethod
    async def log_seed(self, at_least: int) -> None:
        """Give cursors above ``at_least`` from now on (a log wiped under an archive);
        a log found below it lost cursors it gave and moves past the clock's floor."""

    @abstractmethod
    async def log_last(self, after: int) -> int:
        """The highest cursor given (0: none yet), for a read after ``after``. A log
        below ``after`` lost cursors it gave (a shop holds one): it moves past the
        clock's floor first, so the events given from then on are above ``after``."""

    @abstractmethod
    async def delivery_put(self, event_id: str, record: bytes, open_: bool, at: int) -> None:
        """Store a delivery's state; open (pending or failed) ones are all kept, done
        ones only the newest ``settings.deliveries_kept``."""

    @abstractmethod
    async def delivery_get(self, event_id: str) -> bytes | None: ...

    @abstractmethod
    async def deliveries(self, open_only: bool, limit: int) -> list[bytes]:
        """Newest first."""

    @abstractmethod
    async def audit_add(self, entry: bytes, kept: int) -> None:
        """Add an entry to the audit trail of every session; the newest ``kept`` stay."""

    @abstractmethod
    async def audit_read(self, start: int, count: int) -> list[bytes]:
        """``count`` audit entries from the ``start``-th newest on, newest first."""


class Engine(SessionStore, TimerStore, RecordStore, FanOut, ShopStore):
    """Storage and fan-out for sessions. See the module docstring for the contract."""

    async def start(self) -> None:
        """Connect; called once at start-up."""

    async def close(self) -> None:
        """Release connections and background tasks."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise EngineUnavailable unless the engine answers."""

    async def writable(self) -> bool:
        """Whether the engine takes a write now; raise EngineUnavailable unless it
        answers. An engine that answers and refuses writes (a Redis replica, one out of
        memory) would fail every save while a ping still succeeds."""
        await self.ping()
        return True
