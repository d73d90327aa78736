"""One try of an outbox item at a time: the hold a worker takes just before it calls the
provider for an effect (``effects.py``) or posts a merchant event to the shop
(``deliveries.py``).

The effect loop's claim of a session cannot keep a second worker off an item: the
claim's lease is the session's score in the effects index, and every save of the
session writes that score again from its outbox, so the answer recorded for one item
makes the session due at once while the next one is still due (and so does any other
save meanwhile). Another worker claims it and tries that next item beside the worker
that recorded the answer and went on to it. So each try also holds its item for a
lease of its own, a record in the engine: a worker that finds the try held leaves the
item to the holder.

A hold is named by its item and the item's count of recorded tries, so the answer,
once saved, frees the next try at once and is never deleted: a worker that read the
session before that save still finds the try it read held, and does not make it
again. A worker that dies mid-try leaves it held until its lease runs out, then any
worker makes it again.
"""

from __future__ import annotations

from dataclasses import dataclass

from .payments import PaymentService


@dataclass(frozen=True)
class Hold:
    key: str
    at: int  # when it was taken (the service's clock)


class TryHolds:
    def __init__(self, service: PaymentService) -> None:
        self.engine = service.engine
        self.clock = service.clock
        # Longer than a provider call and a post together (settings.outbox_lease_ms): a
        # hold never runs out mid-try.
        self.lease_ms = service.settings.outbox_lease_ms

    async def take(self, item: str, tries: int) -> Hold | None:
        """Hold try ``tries + 1`` of the outbox item ``item`` for a lease; None when
        another worker holds it."""
        key = f"outbox:try:{item}:{tries}"
        held = await self.engine.put_if_absent(key, b"1", self.lease_ms)
        return Hold(key, self.clock()) if held is None else None

    async def give_up(self, hold: Hold) -> None:
        """Free a try whose answer could not be recorded, so that its retry need not
        wait for the lease. Only while the hold is surely still this worker's (it runs
        out a whole lease after it was taken, and another worker may hold it since)."""
        if self.clock() - hold.at < self.lease_ms // 2:
            await self.engine.delete(hold.key)
