"""The outbox at the edge, for the shop: list a session's merchant events in the events
log, post the first one as a signed webhook, record the answer.

These are outbox items like the gateway effects of ``effects.py``, carried by the
same loop: the merchant events were saved in the session with the decision that made
them (core/merchant.py ``queue_events``), the effect loop claims the session with a
lease when any is due and ``EffectRunner`` hands it here after its gateway effects;
the answer goes back through the pure machine (``DeliveryOutcome``), which applies
the outbox's backoff (core/effects.py ``backoff_ms``) and the retry window. A worker
that dies mid-way leaves them due again once its lease runs out: the log is appended
once per event id, and a webhook posted twice is what "at least once" allows.

Never twice at once, though: each post holds its event for a lease of its own, taken
just before it (``holds.py``), as each try of a gateway effect does. Without it, the
answer recorded for a session's first event made the session due at once while the
next one was, and another worker posted that next event beside this one, which went
on to it: a shop that handles both at once may do its work twice. A worker that finds
the post held leaves the session to the holder, whose save of the answer makes it
due again; one that dies mid-post leaves it held until its lease runs out.

Only the session's first event is posted, so the shop gets a session's events in
``seq`` order: one is never sent before the one before it was accepted or given up.
All the waiting ones are listed in the log at once, so the events API has them even
while the shop is down.

With the archive on, an ended session that changed since the archive's copy (it
owes the archive, ``Session.archive_at``) is listed too, as a snapshot of its state
and history under the same lease: the archive follows the log, so it gets every
change of the session, also those that make no merchant event (the outcome receipt,
a void confirmed, an audit entry), before the engine may forget it.

Posts have slots of their own, taken without waiting: a shop that answers slowly
must never hold up refunds, and a session that finds none free is looked at again
shortly. Each post also writes a delivery record that the admin API lists (the
engine's ``ShopStore``): a view of the outbox, not a queue of its own.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable, Sequence
from typing import Any

from .. import metrics
from ..core.codec import dumps_strict
from ..core.effects import PENDING, Delivery
from ..core.merchant import OUTCOME_TYPES, log_record, snapshot_id, snapshot_record
from ..core.outbox import DeliveryOutcome, SendAgain, tried
from ..core.protocol import ErrorCode
from ..core.session import Session
from ..engine import EngineUnavailable
from ..errors import Refused
from ..telemetry import tracing
from .audit import saved_with
from .holds import Hold, TryHolds
from .payments import PaymentService
from .webhooks import Attempt, WebhookSender

log = logging.getLogger("paylive.deliveries")

# A session that found every post slot taken is looked at again this much later.
BUSY_RETRY_MS = 1_000


class Deliveries:
    def __init__(
        self,
        service: PaymentService,
        sender: WebhookSender | None,
        keep_history: bool = False,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.service = service
        self.engine = service.engine
        self.sender = sender
        # With an archive, an outcome's log record carries the session's history.
        self.keep_history = keep_history
        self.jitter = jitter
        self._slots = asyncio.Semaphore(service.settings.webhook_concurrency)
        # Work on one claim for a third of its lease at most, so nobody else claims it.
        self._budget_ms = service.settings.outbox_lease_ms // 3
        self.holds = TryHolds(service)

    async def run_due(self, session: Session) -> bool:
        """Work on ``session``'s merchant events; False when none was due."""
        started = self.service.clock()
        worked = False
        while True:
            now = self.service.clock()
            unlisted = [d for d in session.deliveries if not d.listed]
            head = session.deliveries[0] if session.deliveries else None
            post = self.sender is not None and head is not None and head.next_at <= now
            owed = session.archive_at is not None
            if not unlisted and not post and not owed:
                return worked
            worked = True
            archived: int | None = None
            if unlisted or owed:
                archived = await self._list(session, unlisted, owed)
            answer: Attempt | None = None
            hold: Hold | None = None
            busy = post and self._slots.locked()
            if post and not busy:
                assert head is not None
                async with self._slots:
                    hold = await self._hold(head)
                    if hold is not None:
                        answer = await self._post(head)
            if busy and not unlisted:
                await self._later(session, now + BUSY_RETRY_MS)
                return True
            if post and not busy and hold is None:
                # Posted by another worker now (or by one that died: its hold runs out
                # with its lease, as the claim of this session does, and it is posted
                # again then). Its answer, once saved, makes the session due again.
                assert head is not None
                log.info("webhook %s is being posted elsewhere", head.id)
                if not unlisted:
                    return True
            if answer is not None and answer.ok and head is not None:
                # Before the answer's save: a save made whose reply is lost leaves the
                # event owed to nobody, never posted or recorded again.
                at = self.service.clock()
                await self._put(tried(head, answer.status, answer.error, at), "delivered", at)
            recorded = DeliveryOutcome(
                listed=tuple(d.id for d in unlisted),
                posted=head.id if answer is not None and head is not None else None,
                ok=answer is not None and answer.ok,
                status=None if answer is None else answer.status,
                error=None if answer is None else answer.error,
                jitter=self.jitter(),
                archived=archived,
            )
            try:
                session = (await self.service.run(session.id, recorded)).session
            except Refused as exc:
                # The session changed too often to record it now: it stays due and is
                # listed (once per id) and posted (at least once) again, as a busy
                # session is, not when the whole lease has run out.
                log.warning("could not record the merchant events of %s: %s", session.id, exc)
                if hold is not None:
                    await self.holds.give_up(hold)
                await self._later(session, self.service.clock() + BUSY_RETRY_MS)
                return True
            if answer is not None and not answer.ok and head is not None:
                await self._record_try(head, answer, session)
            if busy:
                await self._later(session, now + BUSY_RETRY_MS)
                return True
            if answer is None or not answer.ok or self.service.clock() - started > self._budget_ms:
                return True

    async def _list(self, session: Session, unlisted: Sequence[Delivery], owed: bool) -> int | None:
        """Append ``unlisted`` to the events log and, when the archive is ``owed`` the
        session's state, a snapshot of it after them; return the version snapshotted."""
        history: list[bytes] | None = None
        outcome = any(d.event["type"] in OUTCOME_TYPES for d in unlisted)
        snapshot: Session | None = None
        if owed:
            # As stored now: the session handed here may be the one before its last
            # save, whose version the machine would not recognise (and so not settle).
            snapshot = await self.engine.load(session.id)
        if self.keep_history and (outcome or snapshot is not None):
            history = await self.engine.history(session.id, 0)
            if history is None:
                log.warning("the history of %s is no longer complete; archived without", session.id)
        entries = [
            (
                d.id,
                int(d.event["created"]),
                log_record(
                    dumps_strict(d.event), history if d.event["type"] in OUTCOME_TYPES else None
                ),
            )
            for d in unlisted
        ]
        if snapshot is not None and self.keep_history:
            # (Without the archive, which a restart may have turned off, it is owed
            # nothing: the snapshot is settled unlisted, not kept for ever.)
            staff = snapshot.to_admin()
            public = snapshot.to_public()
            extras = {key: value for key, value in staff.items() if key not in public}
            entries.append(
                (
                    snapshot_id(snapshot.id, snapshot.version),
                    self.service.clock(),
                    # An outcome listed with it carries the same history already.
                    snapshot_record(public, extras, snapshot.version, None if outcome else history),
                )
            )
        if entries:
            await self.engine.log_append(entries)
        return None if snapshot is None else snapshot.version

    async def _post(self, delivery: Delivery) -> Attempt:
        assert self.sender is not None
        with tracing.span(
            "webhook out",
            kind="client",
            attributes={
                "paylive.event_id": delivery.id,
                "paylive.event_type": delivery.event.get("type"),
            },
        ) as span:
            answer = await self.sender.post(dumps_strict(delivery.event), str(delivery.event["id"]))
            span.set("http.response.status_code", answer.status)
            if not answer.ok:
                span.fail(answer.error or f"HTTP {answer.status}")
        metrics.webhook_attempt("ok" if answer.ok else "failed")
        log.info(
            "webhook %s posted to the shop: %s",
            delivery.id,
            "accepted" if answer.ok else f"failed ({answer.error or answer.status})",
        )
        return answer

    async def _hold(self, delivery: Delivery) -> Hold | None:
        """Hold the next post of ``delivery``; None when another worker holds it."""
        # "Send again" counts its posts afresh under the same event id: a hold of the
        # first run of posts, still held, must not keep it waiting.
        return await self.holds.take(f"{delivery.id}:{delivery.resent}", delivery.attempts)

    async def _later(self, session: Session, due: int) -> None:
        """Make the outbox due at ``due`` unless a gateway effect is due sooner."""
        effects = [e.next_at for e in session.pending_effects if e.next_at is not None]
        await self.engine.schedule_effects(session.id, min([due, *effects]))

    async def _record_try(self, head: Delivery, answer: Attempt, after: Session) -> None:
        """Write the delivery record of one failed post, as the machine settled it
        (an accepted one is recorded before its save, in ``run_due``)."""
        now = self.service.clock()
        held = next((d for d in after.deliveries if d.id == head.id), None)
        if held is not None and held.attempts > head.attempts:
            await self._put(held, PENDING, now)
        elif held is None and now - head.since >= self.service.rules.merchant_retry_for_ms:
            log.error("webhook %s failed for good after %d tries", head.id, head.attempts + 1)
            await self._put(tried(head, answer.status, answer.error, now), "failed", now)

    async def _put(self, delivery: Delivery, status: str, now: int) -> None:
        record: dict[str, Any] = delivery.to_public(status, now if status == "delivered" else None)
        if status == "failed":
            record["body"] = dumps_strict(delivery.event).decode()  # for "send again"
        await self.engine.delivery_put(
            delivery.id, dumps_strict(record), status != "delivered", now
        )

    # The admin API ---------------------------------------------------------------

    async def send_again(
        self,
        event_id: str,
        body: bytes | None,
        audit: dict[str, Any] | None = None,
        request: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any] | None, bool]:
        """Post an event once more (the admin's "send again"), behind whatever its
        session still owes the shop. ``body`` is the event as posted, when the caller
        found it in the log or the archive. A session the engine has forgotten owes
        nothing: its event is posted once, now, and the answer returned. With
        ``audit``, also the audit entry made, and whether it was saved with its
        session (``AuditTrail.recorded``) or not (a forgotten one: ``added``; None
        when nothing was done). ``request``: the keyed request's digest, which the
        session remembers: the same request again is answered with the delivery it
        queued, as it stands (posted already: its record), and queues nothing."""
        if self.sender is None:
            raise Refused(ErrorCode.WEBHOOKS_OFF, "PAYLIVE_MERCHANT_WEBHOOK_URL is not set")
        held = await self.engine.delivery_get(event_id)
        record = json.loads(held) if held is not None else {}
        if record.get("body") is not None:
            body = record["body"].encode()
        if body is None:
            raise Refused(ErrorCode.NOT_FOUND, f"no event {event_id}")
        event = json.loads(body)
        resent = int(record.get("resent", 0)) + 1
        session_id = event["session"]["id"]
        try:
            outcome = await self.service.run(session_id, SendAgain(event, resent, request), audit)
        except Refused as exc:
            if exc.code != ErrorCode.NOT_FOUND:
                raise
            posted = await self._post_once(event, resent)
            entry = None
            if audit is not None:
                entry = {**audit, "at": self.service.clock(), "session": session_id}
            return posted, entry, False
        except EngineUnavailable:
            # Queued, perhaps, with only the save's reply lost: then the staff action is
            # made, and a retry would be refused (delivery_pending) and not audit it.
            saved = (
                None if audit is None else await saved_with(self.engine, session_id, audit["id"])
            )
            if saved is None:
                raise
            session, entry = saved
            queued_now = [d for d in session.deliveries if d.id == event_id]
            if queued_now:
                await self._put(queued_now[0], PENDING, self.service.clock())
                return queued_now[0].to_public(PENDING), entry, True
            # Posted already, so soon after: its record says how it went.
            record = await self.engine.delivery_get(event_id)
            if record is None:
                raise
            return json.loads(record), entry, True
        refusal = outcome.decision.refusal
        if refusal is not None:
            raise Refused(refusal.code, refusal.message)
        queued_now = [d for d in outcome.session.deliveries if d.id == event_id]
        if not outcome.decision.to_save:
            # The same request again (``request``), its kept answer lost: it queued the
            # event, which is still queued or was posted since (its record says how it
            # went). Nothing was done now, so nothing is audited.
            if queued_now:
                return queued_now[0].to_public(PENDING), None, False
            # Read now: the one read above may be from before the post that took it out.
            held = await self.engine.delivery_get(event_id)
            if held is not None:
                return _shown(held), None, False
            # No record: only a delivered one is ever dropped (past the newest
            # ``deliveries_kept``), so it was delivered; what the record said is gone.
            gone = Delivery(event, since=event["created"], next_at=0, resent=max(resent - 1, 1))
            return gone.to_public("delivered"), None, False
        [queued] = queued_now
        await self._put(queued, PENDING, self.service.clock())
        entry = outcome.session.audit[-1] if audit is not None else None
        return queued.to_public(PENDING), entry, entry is not None

    async def _post_once(self, event: dict[str, Any], resent: int) -> dict[str, Any]:
        now = self.service.clock()
        delivery = Delivery(event, since=now, next_at=now, listed=True, resent=resent)
        # Held as an outbox post is: two "send again" at once (two staff, a double
        # click) read the same record, and each posted the event beside the other, so
        # a shop handling an event id twice at once could do its work twice. The hold
        # is never freed: the record written below counts this post (``resent``), so
        # the next "send again" takes a hold of its own.
        if await self._hold(delivery) is None:
            raise Refused(ErrorCode.DELIVERY_PENDING, f"{event['id']} is being sent again")
        answer = await self._post(delivery)
        status = "delivered" if answer.ok else "failed"
        done = tried(delivery, answer.status, answer.error, self.service.clock())
        await self._put(done, status, self.service.clock())
        return done.to_public(status, done.last_attempt_at if answer.ok else None)

    async def deliveries(self, open_only: bool, limit: int) -> list[dict[str, Any]]:
        return [_shown(raw) for raw in await self.engine.deliveries(open_only, limit)]

    async def close(self) -> None:
        if self.sender is not None:
            await self.sender.close()


def _shown(raw: bytes) -> dict[str, Any]:
    """A delivery record as staff are shown it: without the event's body it keeps for
    "send again"."""
    record: dict[str, Any] = json.loads(raw)
    record.pop("body", None)
    return record
