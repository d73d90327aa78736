"""The audit trail (docs/protocol.md section 8.2): what staff and the shop did that
changed something, with who, when, from which address and on which session.

An action on a session is recorded in the session itself, in the same save as the
change it made (``PaymentService.run(..., audit=...)``), so it is recorded exactly
when the change is, and once. The engine adds it to its trail of every session (the
newest ``AUDIT_KEPT_GLOBAL``) in that same atomic save where it can (memory, one Redis:
``Engine.saves_audit``), so no worker dying after the save can leave it out; on Redis
Cluster that trail lives in another slot, and ``recorded`` copies it after the save.
``recorded`` then archives it (the archive keeps it as long as it keeps sessions). An
action on no session (the sandbox's switches) is ``added``: to the engine's trail and
the archive. Reads: one session's trail from the session while the engine holds it,
else from the archive; the trail of every session from the engine's list merged with
the archive's rows. ``catch_up`` (every 10 s on each worker) archives what the
engine's trail holds past the archive's mark, so PostgreSQL being down (or a worker
dying before ``recorded``) delays the archive and loses nothing (unless more than
``AUDIT_KEPT_GLOBAL`` actions come meanwhile).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ..archive import ArchiveUnavailable, AuditQuery, audit_order
from ..core.codec import dumps_strict
from ..core.session import AUDIT_KEPT, Session
from ..engine import AuditAdd, Engine, EngineUnavailable
from .reads import unavailable

if TYPE_CHECKING:
    from ..archive.store import Archive

log = logging.getLogger("paylive.audit")

AUDIT_KEPT_GLOBAL = 10_000
# The engine's trail is read this many entries at a time, newest first.
PAGE = 200
# The id of the newest entry of the engine's trail known to be archived.
ARCHIVED_MARK = "audit:archived"
MARK_TTL_MS = 30 * 24 * 3_600_000
# How far an entry's place in the engine's trail may be from its ``at``: the time from
# the decision to its save (or, on Cluster, to its copy after the save): a request's,
# plus an engine slow to answer.
ORDER_SLACK_MS = 60_000


def for_save(entry: dict[str, Any]) -> AuditAdd:
    """What the save that records ``entry`` in its session asks the engine to add to the
    trail of every session (see ``Engine.save``)."""
    return AuditAdd(dumps_strict(entry), AUDIT_KEPT_GLOBAL)


class AuditTrail:
    def __init__(self, engine: Engine, archive: Archive | None) -> None:
        self.engine = engine
        self.archive = archive

    async def added(self, entry: dict[str, Any]) -> None:
        """An action on no session made just now (the sandbox's switches, a send again
        of a session the engine forgot): to the trail of every session, and to the
        archive."""
        await self._copy(entry)
        await self._archive(entry)

    async def recorded(self, entry: dict[str, Any]) -> None:
        """An entry saved with its session's change (its reply lost or not): the save
        put it in the trail of every session where the engine can, so only the engine
        that cannot (Cluster) gets a copy now, which keeps it there once. Then to the
        archive."""
        if not self.engine.saves_audit:
            await self._copy(entry)
        await self._archive(entry)

    async def _copy(self, entry: dict[str, Any]) -> None:
        """With the engine down (rare: the action was just saved in it) the copy is
        skipped, and the session's record, if any, still holds it."""
        try:
            await self.engine.audit_add(dumps_strict(entry), AUDIT_KEPT_GLOBAL)
        except EngineUnavailable as exc:
            # The action is done and, on a session, recorded with it: its answer must not
            # say otherwise (a client that retried would act twice).
            log.warning("audit entry %s not copied to the trail: %s", entry.get("id"), exc)

    async def _archive(self, entry: dict[str, Any]) -> None:
        """With PostgreSQL down it reaches the archive later, by ``catch_up``."""
        if self.archive is not None:
            try:
                await self.archive.audit_add([entry])
            except ArchiveUnavailable as exc:
                log.warning("audit entry %s not archived yet: %s", entry.get("id"), exc)

    async def saved_with(
        self, session_id: str, entry_id: object
    ) -> tuple[Session, dict[str, Any]] | None:
        """See ``saved_with`` (the module's function), on this trail's engine."""
        return await saved_with(self.engine, session_id, entry_id)

    async def catch_up(self) -> None:
        """Archive the engine's entries newer than the mark (inserts are idempotent)."""
        if self.archive is None:
            return
        mark = await self.engine.get(ARCHIVED_MARK)
        newer: list[dict[str, Any]] = []
        async for entry in self._newest_first():
            if mark is not None and str(entry["id"]).encode() == mark:
                break
            newer.append(entry)
        if not newer:
            return
        try:
            await self.archive.audit_add(newer)
        except ArchiveUnavailable:
            return  # tried again at the next round
        await self.engine.put(ARCHIVED_MARK, str(newer[0]["id"]).encode(), MARK_TTL_MS)

    async def _newest_first(self) -> AsyncIterator[dict[str, Any]]:
        """The engine's trail, newest first, a page at a time (most reads stop early)."""
        for start in range(0, AUDIT_KEPT_GLOBAL, PAGE):
            page = await self.engine.audit_read(start, PAGE)
            for raw in page:
                yield json.loads(raw)
            if len(page) < PAGE:
                return

    async def search(self, query: AuditQuery) -> list[dict[str, Any]]:
        """Entries matching ``query``, newest first, each once."""
        found: dict[str, dict[str, Any]] = {}
        # Read forwards, whether the engine holds every entry newer than ``after``: the
        # page is the oldest of them, which the archive may hold alone.
        whole = False
        if query.session_id is not None:
            session = await self.engine.load(query.session_id)
            if session is not None:
                # Only the session's entries that match count towards the limit: those
                # that do not must not keep the archive from being asked for older ones.
                for entry in session.audit:
                    if query.matches(entry):
                        found[str(entry["id"])] = entry
                whole = query.after is not None and (
                    len(session.audit) < AUDIT_KEPT or audit_order(session.audit[0]) <= query.after
                )
        elif query.after is not None:
            # Every entry newer than the place, down to where the trail's order (that of
            # the copies, ``at``'s but for the moments between a save and its copy) can
            # no longer hold one.
            floor = query.after[0] - ORDER_SLACK_MS
            async for entry in self._newest_first():
                if int(entry.get("at") or 0) < floor:
                    whole = True
                    break
                if query.matches(entry):
                    found[str(entry["id"])] = entry
        else:
            # The engine's trail is in the order entries were copied to it: the order of
            # ``at`` but for the moments between a save and its copy. Past ``limit``
            # matches the scan goes on while an entry could still be newer than the
            # oldest found, or the page would miss it and the next page skip it.
            cut: int | None = None
            async for entry in self._newest_first():
                if cut is not None and int(entry.get("at") or 0) < cut:
                    break
                if query.matches(entry):
                    found[str(entry["id"])] = entry
                if cut is None and len(found) >= query.limit:
                    cut = min(int(e.get("at") or 0) for e in found.values()) - ORDER_SLACK_MS
        short = not whole if query.after is not None else len(found) < query.limit
        if self.archive is not None and short:
            try:
                archived = await self.archive.audit_search(query)
            except ArchiveUnavailable as exc:
                # Not a partial trail that reads as the whole, and not a 500: 503.
                raise unavailable(exc) from None
            for entry in archived:
                found.setdefault(str(entry["id"]), entry)
        return query.page(e for e in found.values() if query.matches(e))


async def saved_with(
    engine: Engine, session_id: str, entry_id: object
) -> tuple[Session, dict[str, Any]] | None:
    """The session and its entry ``entry_id`` if a save whose reply was lost stored
    it, else None (also when the engine cannot say yet). The action was then made: its
    entry must still be ``recorded`` (archived, and on Cluster copied to the trail of
    every session), and a retry would not do it (it finds the change made, and is
    refused or changes nothing)."""
    try:
        session = await engine.load(session_id)
    except EngineUnavailable:
        return None
    if session is None:
        return None
    for entry in reversed(session.audit):
        if entry.get("id") == entry_id:
            return session, entry
    return None
