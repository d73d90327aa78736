"""The read model: every read the edge makes of sessions and of the events log, in
one place, through the service rather than from the engine.

What is read, by name (this module's vocabulary):

- a **session** is the live value (``core.session.Session``) the engine holds: while
  it runs and for ``PAYLIVE_REDIS_RETENTION_MS`` after it ends. ``live`` reads one
  (404 when the engine holds none); ``catch_up`` reads one with its history for a
  socket or a stream; ``listing`` reads the newest, for the dashboard.
- a session's **public view** is the JSON the API shows (``Session.to_public()``).
  The archive keeps only that, so a read that may reach the archive answers with it:
  ``public`` (one session, by id) and ``search``.
- a session's **history** is its durable events (encoded JSON, in ``seq`` order),
  held up to ``PAYLIVE_HISTORY_CAP``.
- a session's **staff history** is its history and the session as staff see it
  (``staff_history``), from the engine or else the archive.
- the **events log** is every merchant event in cursor order; each **log entry**
  holds the event as posted and the session history it carried
  (``core.merchant.log_record``), or is a snapshot of an ended session for the
  archive alone (``core.merchant.snapshot_record``), which no read lists.
  ``events`` reads a page of it, ``event_body`` one event as it was posted. The
  archive (``service/retention.py``) takes the log over past the engine's window.
- the **summary** and **chart** are the dashboard's counts, from the engine's
  counters of every worker.

Reads that fall back to the archive go to the engine first and to PostgreSQL only
for what the engine has forgotten; PostgreSQL being down is ``archive_unavailable``
(503), never a 500. The word "record" is not used here: elsewhere it names the
engine's short-lived keyed values (``RecordStore``: idempotency keys, seen webhook
ids), a log entry's bytes (``core.merchant.log_record``), a session as the Redis
engine stores it, and a ``logging.LogRecord``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..archive import ArchiveUnavailable, AuditQuery, SessionQuery
from ..core import stats
from ..core.codec import Encoded, Message, dumps_strict
from ..core.merchant import is_snapshot, read_log_record
from ..core.protocol import ErrorCode
from ..core.session import Session
from ..engine import Engine
from ..errors import Refused
from ..settings import ReadsSettings

if TYPE_CHECKING:
    from ..archive.store import Archive

log = logging.getLogger("paylive.reads")


def unavailable(exc: ArchiveUnavailable) -> Refused:
    """The refusal for a read the archive could not answer."""
    # PostgreSQL's own words (host names, SQL, states) stay in the log: the caller is
    # told what it can act on.
    log.warning("the archive cannot be read: %s", exc)
    return Refused(ErrorCode.ARCHIVE_UNAVAILABLE, "the archive cannot be read now; retry shortly")


@dataclass(frozen=True)
class CatchUp:
    """A socket's start: the session, and either its history after ``since``
    (``replay``) or None, when that is not all held any more and a snapshot is due."""

    session: Session
    replay: list[Encoded] | None


@dataclass(frozen=True)
class EventsPage:
    """A page of the events log: the events (each with its ``cursor``), the cursor to
    ask after for the next page, and whether the page read ``limit`` entries (more
    may follow; snapshots read are not listed, so the events may be fewer)."""

    events: list[dict[str, Any]]
    next: int
    full: bool

    def to_public(self) -> dict[str, Any]:
        return {"events": self.events, "next": self.next, "has_more": self.full}


@dataclass(frozen=True)
class StaffHistory:
    """``GET /api/admin/sessions/{id}/events``: the durable events held (oldest
    first), whether they are all of them, and the session as staff see it."""

    events: list[dict[str, Any]]
    complete: bool
    session: dict[str, Any]

    def to_public(self) -> dict[str, Any]:
        return {"events": self.events, "complete": self.complete, "session": self.session}


# What staff see of a session besides its public view.
STAFF_FIELDS = ("effects", "review", "audit")
# The newest audit entries of a session an archived staff view shows, as the engine's.
AUDIT_SHOWN = 200


class Reads:
    def __init__(
        self,
        settings: ReadsSettings,
        engine: Engine,
        clock: Callable[[], int],
        archive: Archive | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.archive = archive

    # One session ---------------------------------------------------------------------

    async def live(self, session_id: str) -> Session:
        """The session the engine holds; 404 ``not_found`` when it holds none."""
        session = await self.engine.load(session_id)
        if session is None:
            raise Refused(ErrorCode.NOT_FOUND, f"no session {session_id}")
        return session

    async def public(self, session_id: str) -> dict[str, Any]:
        """The session's public view, from the engine or else the archive."""
        session = await self.engine.load(session_id)
        if session is not None:
            return session.to_public()
        if self.archive is not None:
            try:
                archived = await self.archive.session(session_id)
            except ArchiveUnavailable as exc:
                raise unavailable(exc) from None
            if archived is not None:
                return archived
        raise Refused(ErrorCode.NOT_FOUND, f"no session {session_id}")

    async def catch_up(self, session_id: str, since: int | None) -> CatchUp | None:
        """None for an unknown session. ``since`` past the session's seq cannot be
        replayed (docs/protocol.md section 4.1): a snapshot instead."""
        session = await self.engine.load(session_id)
        if session is None:
            return None
        replay = None
        if since is not None and since <= session.seq:
            history = await self.engine.history(session_id, since)
            if history is not None:
                replay = [Encoded.from_json(raw) for raw in history]
        return CatchUp(session, replay)

    async def history(self, session_id: str, since: int) -> list[bytes] | None:
        """A session's history after ``since``, or None when some of it is trimmed."""
        return await self.engine.history(session_id, since)

    async def staff_history(self, session_id: str, cap: int) -> StaffHistory:
        """A session's history and the session as staff see it: from the engine, or
        else from the archive (the newest ``cap`` events, as the engine holds them);
        404 when neither holds it, 503 when the archive is needed and unreachable."""
        session = await self.engine.load(session_id)
        if session is not None:
            held = await self.engine.history(session_id, 0)
            complete = held is not None
            if held is None:
                # The oldest events were trimmed (PAYLIVE_HISTORY_CAP): what is still held.
                held = await self.engine.history(session_id, max(0, session.seq - cap)) or []
            return StaffHistory([json.loads(raw) for raw in held], complete, session.to_admin())
        if self.archive is None:
            raise Refused(ErrorCode.NOT_FOUND, f"no session {session_id}")
        try:
            found = await self.archive.staff_session(session_id)
            if found is None:
                raise Refused(ErrorCode.NOT_FOUND, f"no session {session_id}")
            public, staff = found
            events = await self.archive.history(session_id)
            if staff is None:
                # Archived before its snapshots were: its trail is in the audit table.
                trail = await self.archive.audit_search(
                    AuditQuery(session_id=session_id, limit=AUDIT_SHOWN)
                )
                staff = {"effects": [], "review": None, "audit": trail[::-1]}
        except ArchiveUnavailable as exc:
            raise unavailable(exc) from None
        shown = events[-cap:] if cap > 0 else []
        seqs = [int(e["seq"]) for e in events]
        complete = len(shown) == len(events) and seqs == list(range(1, len(seqs) + 1))
        extras = {key: staff.get(key) for key in STAFF_FIELDS}
        return StaffHistory(shown, complete, {**public, **extras})

    # Many sessions -------------------------------------------------------------------

    async def listing(self, which: str, limit: int) -> list[Session]:
        """``active``, ``all`` or ``needs_review`` sessions the engine holds, newest
        first, at most ``limit`` (capped by ``admin_list_max``)."""
        limit = min(limit, self.settings.admin_list_max)
        if which == "needs_review":
            return await self.engine.list_review(limit)
        return await self.engine.list_sessions(which == "active", limit)

    async def search(self, query: SessionQuery) -> list[dict[str, Any]]:
        """Public views of the sessions matching ``query``, newest first: live and
        recent ones from the engine (by id, or among its newest ``admin_list_max``),
        the rest from the archive."""
        found: dict[str, dict[str, Any]] = {}
        if query.session_id is not None:
            session = await self.engine.load(query.session_id)
            candidates = [session] if session is not None else []
        else:
            candidates = await self.engine.list_sessions(False, self.settings.admin_list_max)
        for session in candidates:
            public = session.to_public()
            if _matches(public, query):
                found[session.id] = public
        if self.archive is not None:
            try:
                archived = await self.archive.search(query)
            except ArchiveUnavailable as exc:
                raise unavailable(exc) from None
            for public in archived:
                held = found.get(public["id"])
                if held is None or held["seq"] < public["seq"]:
                    found[public["id"]] = public
        ordered = sorted(found.values(), key=lambda s: (s["created_at"], s["id"]), reverse=True)
        return ordered[: query.limit]

    async def summary(self) -> dict[str, Any]:
        return stats.summary(await self.engine.counters())

    async def chart(self) -> dict[str, Any]:
        """State changes and interruptions per minute over the last hour, of every
        worker (the counters are the engine's)."""
        now = self.clock()
        return {**stats.chart(await self.engine.counters(), now), "now": now}

    async def admin_snapshot(self, resync: bool = False) -> Encoded:
        """The admin feed's first message; with ``resync``, the one that replaces the
        feed's state after this worker lost its fan-out for a while (marked so)."""
        sessions = await self.engine.list_sessions(True, self.settings.admin_list_max)
        data: dict[str, object] = {
            "sessions": [s.to_public() for s in sessions],
            "summary": await self.summary(),
        }
        if resync:
            data["resync"] = True
        return Encoded.of(Message("admin.snapshot", data, None, None, self.clock()))

    # The events log ------------------------------------------------------------------

    async def events(self, after: int, limit: int) -> EventsPage:
        """Merchant events after the cursor ``after``, in order: from the archive for
        what the engine no longer holds, then from the engine. ``after`` beyond every
        cursor given is refused: an empty page forever would hide the events to come."""
        # A cursor the log has not reached: it lost cursors it gave (a Redis restarted
        # empty, a replica that lost the tail), and ``log_last`` moved it past the
        # clock's floor, above ``after`` unless the clock is behind the one that gave
        # it; or ``after`` was never given. Either way the shop must hear of it.
        last = await self.engine.log_last(after)
        if after > last:
            raise Refused(
                ErrorCode.INVALID_FIELD,
                f"after: {after} is beyond the last cursor given ({last}); ask again "
                "after a cursor read before, or from 0 (events are de-duplicated by id)",
            )
        # The engine's log first, then where it starts: another worker may trim it
        # between two reads, and read the other way round (where it starts, the archive
        # below that, then the log) the entries trimmed meanwhile were in neither read
        # and the page skipped them. A trim drops only entries the archive holds, so
        # whatever the log lacked when read is below ``first``, in the archive.
        held = await self.engine.log_read(after, limit)
        first = await self.engine.log_first()
        # None: a snapshot for the archive (no merchant event), read past, not listed.
        found: dict[int, dict[str, Any] | None] = {}
        if after + 1 < first and self.archive is not None:
            try:
                archived = await self.archive.events(after, limit)
            except ArchiveUnavailable as exc:
                raise unavailable(exc) from None
            found = {cursor: json.loads(raw) for cursor, raw in archived if cursor < first}
        for cursor, entry in held:
            if cursor not in found:
                found[cursor] = None if is_snapshot(entry) else read_log_record(entry)[0]
        out = sorted(found.items())[:limit]
        return EventsPage(
            [{"cursor": cursor, **event} for cursor, event in out if event is not None],
            out[-1][0] if out else after,
            len(out) >= limit,
        )

    async def event_body(self, event_id: str) -> bytes | None:
        """An event as it was posted, from the log or the archive (for "send again")."""
        entry = await self.engine.log_get(event_id)
        if entry is not None and not is_snapshot(entry):
            return dumps_strict(read_log_record(entry)[0])
        if self.archive is not None:
            try:
                return await self.archive.event(event_id)
            except ArchiveUnavailable as exc:
                raise unavailable(exc) from None
        return None


def _matches(session: dict[str, Any], query: SessionQuery) -> bool:
    if query.order_id is not None and session["order_id"] != query.order_id:
        return False
    if query.status is not None and session["status"] != query.status:
        return False
    if query.created_from is not None and session["created_at"] < query.created_from:
        return False
    return query.created_to is None or session["created_at"] < query.created_to
