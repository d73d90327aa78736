"""The single use of tickets (docs/protocol.md 4.2), recorded in the engine so that a
ticket spent on one worker is spent on all of them."""

from __future__ import annotations

from ..engine import RecordStore

# A use is remembered a little past the ticket's expiry, when it is refused anyway.
_SLACK_MS = 1_000


class TicketUses:
    def __init__(self, engine: RecordStore) -> None:
        self.engine = engine

    async def first_use(self, nonce: str, expires_at: int, now: int) -> bool:
        """True the first time ``nonce`` is presented, False ever after."""
        ttl = max(1, expires_at - now) + _SLACK_MS
        return await self.engine.put_if_absent("ticket:" + nonce, b"1", ttl) is None
