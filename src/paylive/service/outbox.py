"""The merchant outbox worker: list every merchant event in the events log, then
deliver it to the shop as a signed webhook, at least once and in order per session.

The service writes a decision's merchant events into the session's outbox in the
same save as the decision (engine/base.py), so an event exists exactly when its
state does. A loop on every worker claims sessions whose outbox is due, with a lease,
and works through each one head first:

1. the event is appended to the events log (once per id: a worker that dies after
   this step appends nothing new when another one does it again);
2. with ``PAYLIVE_MERCHANT_WEBHOOK_URL`` set, it is posted; a failure makes the
   session's outbox due again after a capped exponential backoff with jitter, and
   later events of that session wait behind it (ordered by ``seq``); after
   ``merchant_retry_for_ms`` of failures the delivery is marked failed, kept with its
   body for "send again", and the next event goes;
3. the item is popped (only if it is still the head).

Each delivery's state is a record the admin API lists (``Delivery``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from ..core.merchant import OUTCOME_TYPES, MerchantEvent, log_record
from ..engine import Engine
from ..errors import ApiError
from ..settings import Settings
from .webhooks import WebhookSender

log = logging.getLogger("paylive.outbox")

LOG_AND_SEND = b"L"  # a new event: list it, then deliver it
SEND = b"R"  # "send again": deliver only
HEAD_BATCH = 16


def outbox_item(event: MerchantEvent) -> bytes:
    return LOG_AND_SEND + event.body()


@dataclass(frozen=True)
class Delivery:
    """Where one event's webhook stands: pending (retrying), delivered or failed."""

    id: str
    session: str
    type: str
    seq: int
    status: str
    created: int  # the event's
    since: int  # when this run of tries began (the event, or its last "send again")
    attempts: int = 0
    next_at: int | None = None
    last_attempt_at: int | None = None
    last_status: int | None = None
    last_error: str | None = None
    delivered_at: int | None = None
    resent: int = 0
    body: str | None = None  # kept while failed, for "send again"

    @property
    def open(self) -> bool:
        return self.status != "delivered"

    def dump(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def load(cls, raw: bytes) -> Delivery:
        return cls(**json.loads(raw))

    def to_public(self) -> dict[str, Any]:
        out = asdict(self)
        del out["body"]
        return out


class Outbox:
    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        clock: Callable[[], int],
        sender: WebhookSender | None = None,
        keep_history: bool = False,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.sender = sender
        # With an archive, an outcome's log record carries the session's history.
        self.keep_history = keep_history
        self._slots = asyncio.Semaphore(settings.outbox_concurrency)
        self._tasks: set[asyncio.Task[None]] = set()

    async def step(self) -> None:
        """One round of the loop: claim due sessions and work through each."""
        s = self.settings
        due = await self.engine.outbox_claim(self.clock(), s.outbox_batch, s.outbox_lease_ms)
        for session_id in due:
            await self._slots.acquire()
            task = asyncio.create_task(self._guarded(session_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.sender is not None:
            await self.sender.close()

    async def _guarded(self, session_id: str) -> None:
        try:
            await self.work(session_id)
        except Exception:
            # The lease runs out and some worker claims it again: nothing is lost.
            log.warning("outbox of %s: will try again after its lease", session_id, exc_info=True)
        finally:
            self._slots.release()

    async def work(self, session_id: str) -> None:
        """Handle a claimed session's outbox, head first, within a third of the lease
        (so that nobody else claims it meanwhile), then hand it back."""
        started = self.clock()
        while True:
            items = await self.engine.outbox_head(session_id, HEAD_BATCH)
            if not items:
                await self.engine.outbox_pop(session_id, b"")  # unindexes an empty outbox
                if await self.engine.outbox_head(session_id, 1):
                    continue  # a save pushed meanwhile, after the index was still leased
                return
            for item in items:
                kind, body = item[:1], item[1:]
                event = json.loads(body)
                if kind == LOG_AND_SEND:
                    await self._log(session_id, event, body)
                if self.sender is not None:
                    retry_at = await self._deliver(event, body)
                    if retry_at is not None:
                        await self.engine.outbox_later(session_id, retry_at)
                        return
                if not await self.engine.outbox_pop(session_id, item):
                    return  # our lease ran out and another worker has it now
                if self.clock() - started > self.settings.outbox_lease_ms // 3:
                    await self.engine.outbox_later(session_id, self.clock())
                    return

    async def _log(self, session_id: str, event: dict[str, Any], body: bytes) -> None:
        history: list[bytes] | None = None
        if self.keep_history and event["type"] in OUTCOME_TYPES:
            history = await self.engine.history(session_id, 0)
            if history is None:
                log.warning("the history of %s is no longer complete; archived without", session_id)
        record = log_record(body, history)
        await self.engine.log_append([(event["id"], int(event["created"]), record)])

    # Delivery ----------------------------------------------------------------------

    async def _deliver(self, event: dict[str, Any], body: bytes) -> int | None:
        """Post once; None when done with this event (delivered, or given up), else
        when to try again."""
        assert self.sender is not None
        held = await self.engine.delivery_get(event["id"])
        if held is not None:
            delivery = Delivery.load(held)
        else:
            delivery = Delivery(
                event["id"],
                event["session"]["id"],
                event["type"],
                event["seq"],
                "pending",
                event["created"],
                event["created"],
            )
        attempt = await self.sender.post(body)
        now = self.clock()
        delivery = replace(
            delivery,
            attempts=delivery.attempts + 1,
            last_attempt_at=now,
            last_status=attempt.status,
            last_error=attempt.error,
        )
        retry_at: int | None = None
        if attempt.ok:
            delivery = replace(
                delivery, status="delivered", delivered_at=now, next_at=None, body=None
            )
        elif now - delivery.since >= self.settings.merchant_retry_for_ms:
            log.error("webhook %s failed for good after %d tries", delivery.id, delivery.attempts)
            delivery = replace(delivery, status="failed", next_at=None, body=body.decode())
        else:
            retry_at = now + self._backoff(delivery.attempts)
            delivery = replace(delivery, status="pending", next_at=retry_at)
        await self.engine.delivery_put(delivery.id, delivery.dump(), delivery.open, now)
        return retry_at

    def _backoff(self, attempts: int) -> int:
        """Capped exponential backoff, half fixed and half random, so that a shop that
        comes back is not hit by every retry at once."""
        s = self.settings
        delay = min(s.merchant_backoff_cap_ms, s.merchant_backoff_ms * 2 ** min(attempts - 1, 40))
        return int(delay / 2 + random.uniform(0, delay / 2))

    async def send_again(self, event_id: str, body: bytes | None) -> Delivery:
        """Queue an event's webhook once more (the admin's "send again"), behind
        whatever its session's outbox holds. ``body`` is the event as posted, when the
        caller found it in the log or the archive."""
        if self.sender is None:
            raise ApiError(409, "webhooks_off", "PAYLIVE_MERCHANT_WEBHOOK_URL is not set")
        held = await self.engine.delivery_get(event_id)
        delivery = Delivery.load(held) if held is not None else None
        if delivery is not None and delivery.body is not None:
            body = delivery.body.encode()
        if body is None:
            raise ApiError(404, "not_found", f"no event {event_id}")
        event = json.loads(body)
        now = self.clock()
        if delivery is None:
            delivery = Delivery(
                event["id"],
                event["session"]["id"],
                event["type"],
                event["seq"],
                "pending",
                event["created"],
                now,
            )
        delivery = replace(
            delivery, status="pending", since=now, next_at=now, resent=delivery.resent + 1
        )
        await self.engine.outbox_push(delivery.session, [SEND + body])
        await self.engine.delivery_put(delivery.id, delivery.dump(), True, now)
        return delivery

    async def deliveries(self, open_only: bool, limit: int) -> list[dict[str, Any]]:
        return [
            Delivery.load(raw).to_public() for raw in await self.engine.deliveries(open_only, limit)
        ]
