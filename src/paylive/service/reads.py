"""What the edge reads, through the service rather than from the engine: a socket's
catch-up, the admin listing, the summary and the admin feed's first message."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..core import stats
from ..core.codec import Encoded, Message
from ..core.session import Session
from ..engine import SessionStore
from ..settings import Settings


@dataclass(frozen=True)
class CatchUp:
    """A socket's start: the session, and either the durable events after ``since``
    (``replay``) or None, when they are not all held any more and a snapshot is due."""

    session: Session
    replay: list[Encoded] | None


class Reads:
    def __init__(self, settings: Settings, engine: SessionStore, clock: Callable[[], int]) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock

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

    async def sessions(self, which: str, limit: int) -> list[Session]:
        """``active``, ``all`` or ``needs_review`` sessions, newest first, at most
        ``limit`` (capped by ``admin_list_max``)."""
        limit = min(limit, self.settings.admin_list_max)
        if which == "needs_review":
            return await self.engine.list_review(limit)
        return await self.engine.list_sessions(which == "active", limit)

    async def history(self, session_id: str, since: int) -> list[bytes] | None:
        """A session's durable events after ``since``, or None when some are trimmed."""
        return await self.engine.history(session_id, since)

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
