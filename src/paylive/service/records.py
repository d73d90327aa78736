"""What paylive remembers beyond the engine's window: reads that fall back to the
archive, and the loops that fill and trim it.

The engine holds live sessions and, for ``PAYLIVE_REDIS_RETENTION_MS`` after they
end, their state and history; it holds the events log for as long too. With
``PAYLIVE_DATABASE_URL`` the archive follows the log (``follow``), and a session,
an event or a search the engine has forgotten is read from it. The log is trimmed
only past the archive's mark, so PostgreSQL being down delays the archive, never
loses from it.

Why the archive follows the log rather than taking items of the outbox as webhooks
do: the outbox is what makes the log (each merchant event is saved with its
decision and listed from the outbox, once per id), and the archive is the log's
continuation. The events API reads the archive below the log's first cursor and the
engine above it, so the archive must hold a prefix of the log in cursor order with
its mark; a follower that writes a batch and its mark in one transaction gives
exactly that, each event written once, 500 per transaction. Per-session outbox items
would arrive in any order, one transaction each, and leave no mark to trim the log
by. What the follower shares with the outbox is its backoff while PostgreSQL is down.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..archive import ArchiveUnavailable, SessionQuery
from ..core.codec import dumps_strict
from ..core.effects import backoff_ms
from ..core.merchant import read_log_record
from ..core.protocol import ErrorCode
from ..engine import Engine
from ..errors import Refused
from ..settings import Settings

if TYPE_CHECKING:
    from ..archive.store import Archive

log = logging.getLogger("paylive.records")

DAY_MS = 24 * 3600 * 1000
TRIM_BATCH = 1_000
# The follower's longest wait between tries while PostgreSQL is down.
FOLLOW_RETRY_CAP_MS = 5_000
# While PostgreSQL stays unreachable, the warning is repeated this often.
OUTAGE_WARN_EVERY_MS = 60_000


def _unavailable(exc: ArchiveUnavailable) -> Refused:
    # PostgreSQL's own words (host names, SQL, states) stay in the log: the caller is
    # told what it can act on.
    log.warning("the archive cannot be read: %s", exc)
    return Refused(ErrorCode.ARCHIVE_UNAVAILABLE, "the archive cannot be read now; retry shortly")


@dataclass(frozen=True)
class Page:
    events: list[dict[str, Any]]
    next: int

    def to_public(self, limit: int) -> dict[str, Any]:
        return {"events": self.events, "next": self.next, "has_more": len(self.events) >= limit}


class Records:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        archive: Archive | None,
        clock: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.archive = archive
        self.clock = clock
        self._seeded = False
        self._failures = 0
        self._retry_at = 0
        self._down_since = 0
        self._warned_at = 0

    # Reads ---------------------------------------------------------------------------

    async def session(self, session_id: str) -> dict[str, Any]:
        """The session as the API shows it, from the engine or else the archive."""
        session = await self.engine.load(session_id)
        if session is not None:
            return session.to_public()
        if self.archive is not None:
            try:
                archived = await self.archive.session(session_id)
            except ArchiveUnavailable as exc:
                raise _unavailable(exc) from None
            if archived is not None:
                return archived
        raise Refused(ErrorCode.NOT_FOUND, f"no session {session_id}")

    async def events(self, after: int, limit: int) -> Page:
        """Merchant events after the cursor ``after``, in order: from the archive for
        what the engine no longer holds, then from the engine."""
        out: list[tuple[int, dict[str, Any]]] = []
        first = await self.engine.log_first()
        if after + 1 < first and self.archive is not None:
            try:
                archived = await self.archive.events(after, limit)
            except ArchiveUnavailable as exc:
                raise _unavailable(exc) from None
            out = [(cursor, json.loads(raw)) for cursor, raw in archived if cursor < first]
        if len(out) < limit:
            since = out[-1][0] if out else after
            for cursor, raw in await self.engine.log_read(since, limit - len(out)):
                out.append((cursor, read_log_record(raw)[0]))
        return Page(
            [{"cursor": cursor, **event} for cursor, event in out], out[-1][0] if out else after
        )

    async def event_body(self, event_id: str) -> bytes | None:
        """An event as it was posted, from the log or the archive (for "send again")."""
        raw = await self.engine.log_get(event_id)
        if raw is not None:
            return dumps_strict(read_log_record(raw)[0])
        if self.archive is not None:
            try:
                return await self.archive.event(event_id)
            except ArchiveUnavailable as exc:
                raise _unavailable(exc) from None
        return None

    async def search(self, query: SessionQuery) -> list[dict[str, Any]]:
        """Sessions matching ``query``, newest first: live and recent ones from the
        engine (by id, or among its newest ``admin_list_max``), the rest from the archive."""
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
                raise _unavailable(exc) from None
            for public in archived:
                held = found.get(public["id"])
                if held is None or held["seq"] < public["seq"]:
                    found[public["id"]] = public
        ordered = sorted(found.values(), key=lambda s: (s["created_at"], s["id"]), reverse=True)
        return ordered[: query.limit]

    # Loops ---------------------------------------------------------------------------

    async def follow(self) -> None:
        """Archive what the log holds past the archive's mark (one batch a call);
        while PostgreSQL is down, try again with the outbox's backoff."""
        if self.archive is None or self.clock() < self._retry_at:
            return
        batch = self.settings.archive_batch
        try:
            if not self._seeded:
                # An engine that lost its log (a new Redis) must not give cursors
                # again that the archive already holds.
                await self.engine.log_seed(await self.archive.last_cursor())
                self._seeded = True
            await self.archive.follow(lambda mark: self.engine.log_read(mark, batch))
        except ArchiveUnavailable as exc:
            now = self.clock()
            if not self._failures:
                self._down_since = self._warned_at = now
                log.warning("archive: %s; the events log keeps everything until it is back", exc)
            elif now - self._warned_at >= OUTAGE_WARN_EVERY_MS:
                # Redis holds every event the archive has not taken: a long outage grows
                # it, so it is said again and again, not once.
                self._warned_at = now
                log.warning(
                    "archive: still unreachable after %d s (%s); the events log in the "
                    "engine grows until it is back",
                    (now - self._down_since) // 1000,
                    exc,
                )
            self._failures += 1
            poll = self.settings.archive_poll_ms
            delay = backoff_ms(
                self._failures, random.random(), poll, max(poll, FOLLOW_RETRY_CAP_MS)
            )
            self._retry_at = self.clock() + delay
            raise
        if self._failures:
            log.warning("archive: reachable again; catching up")
        self._failures = 0

    async def housekeeping(self) -> None:
        """Trim the log past its window (and past the archive's mark), and purge the
        archive past ``PAYLIVE_ARCHIVE_DAYS``."""
        now = self.clock()
        upto = 2**62
        if self.archive is not None:
            try:
                upto = await self.archive.mark()
                await self.archive.purge(now - self.settings.archive_days * DAY_MS)
            except ArchiveUnavailable:
                return  # nothing is trimmed that the archive may not have
        await self.engine.log_trim(now - self.settings.retention_after_end_ms, upto, TRIM_BATCH)


def _matches(session: dict[str, Any], query: SessionQuery) -> bool:
    if query.order_id is not None and session["order_id"] != query.order_id:
        return False
    if query.status is not None and session["status"] != query.status:
        return False
    if query.created_from is not None and session["created_at"] < query.created_from:
        return False
    return query.created_to is None or session["created_at"] < query.created_to
