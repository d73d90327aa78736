"""The outbox at the edge: carry out one session's due gateway effects, then hand it to
``deliveries.py`` for the merchant events it owes the shop.

The runtime's effect loop claims sessions whose outbox has an item due (with a
lease, exactly as timers are claimed) and hands each to ``EffectRunner.run_due``,
which calls the provider with the effect's own idempotency key and records the
answer through the pure machine (``EffectOutcome``). Nothing is lost in between: the
effect was saved with the decision that needs it, and until an answer is saved it
stays due. A worker that dies after the call and before the save leaves it due
again once its lease runs out; the next call carries the same key, so the provider
does it once.

The claim's lease alone cannot keep a second worker off an effect (every save of the
session makes it due again while its next effect is), so each try holds its effect
for a lease of its own, taken just before the call (``holds.py``): a worker that finds
the try held leaves that effect to the holder and goes on to the next. A worker that
dies mid-try leaves it held until its lease runs out, then any worker makes it again
under the same key. Two calls under one key at once would be done once all the same,
but Stripe refuses the second (409 ``idempotency_key_in_use``), a failed try counted
toward review for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import metrics
from ..core.effects import CAPTURE, PENDING, REFUND, VOID, GatewayEffect
from ..core.outbox import EffectOutcome
from ..core.session import Session, idempotency_key
from ..engine import Engine, EngineUnavailable
from ..errors import Refused
from ..gateway import GatewayError
from ..telemetry import context, tracing
from .holds import TryHolds
from .payments import PaymentService, provider_call, provider_ref

if TYPE_CHECKING:
    from .deliveries import Deliveries

log = logging.getLogger("paylive.effects")


class EffectRunner:
    def __init__(
        self,
        service: PaymentService,
        deliveries: Deliveries | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.service = service
        self.deliveries = deliveries
        self.jitter = jitter
        self.call_timeout = service.settings.effect_call_timeout_ms / 1000
        self.holds = TryHolds(service)

    async def run_due(
        self, session_id: str, gateway_done: Callable[[], None] = lambda: None
    ) -> None:
        """Try every effect of the session that is due now, one after the other, then
        its merchant events. ``gateway_done`` is called in between: the runtime gives
        back the provider's slot there, so a shop that answers slowly never holds up
        refunds."""
        released = False

        def done_once() -> None:
            nonlocal released
            if not released:
                released = True
                gateway_done()

        with context.bound(session=session_id):
            await self._run_due(session_id, done_once)

    async def _run_due(self, session_id: str, gateway_done: Callable[[], None]) -> None:
        engine = self.service.engine
        try:
            session = await engine.load(session_id)
            if session is None:
                await engine.schedule_effects(session_id, None)
                return
            # Claimed by this worker's loop: the work continues the session's trace.
            with tracing.continued(session.trace):
                await self._effects_due(session_id, session, gateway_done)
        finally:
            gateway_done()

    async def _effects_due(
        self, session_id: str, session: Session, gateway_done: Callable[[], None]
    ) -> None:
        engine = self.service.engine
        try:
            now = self.service.clock()
            due = [e for e in session.pending_effects if e.next_at is not None and e.next_at <= now]
            for ident in [e.ident for e in due]:
                # As the session is now: the answer just recorded may have cancelled this
                # one (a capture whose hold a void released).
                effect = session.effect(*ident)
                if effect is None or not effect.pending:
                    continue
                hold = await self.holds.take(effect.key(session_id), effect.tries)
                if hold is None:
                    # Another worker is making this try (or died making it: the hold
                    # runs out with its lease, and the try is made again then).
                    log.info("%s of %s is in flight elsewhere", effect.kind, effect.key(session_id))
                    continue
                with tracing.span(
                    f"outbox {effect.kind}",
                    kind="consumer",
                    attributes={"paylive.effect": effect.kind, "paylive.attempt": effect.attempt},
                ):
                    outcome = await self._call(session, effect)
                    log.info(
                        "%s of %s: %s",
                        effect.kind,
                        effect.key(session_id),
                        "done" if outcome.ok else f"failed ({outcome.error})",
                    )
                    try:
                        session = (await self.service.run(session_id, outcome)).session
                    except Refused as exc:
                        # The session changed too often to record it now, or the provider
                        # cannot confirm a void the answer needs: the effect is still due
                        # and is tried again (under the same key) after the first retry
                        # delay, not after the whole lease: a refund must not wait 15 s
                        # because a busy session was saved meanwhile.
                        log.warning(
                            "could not record the %s of %s: %s", effect.kind, session_id, exc
                        )
                        await self.holds.give_up(hold)
                        retry_at = self.service.clock() + self.service.rules.effect_retry_base_ms
                        await engine.schedule_effects(session_id, retry_at)
                        return
        finally:
            gateway_done()
        shop = self.deliveries is not None and await self.deliveries.run_due(session)
        if not due and not shop:
            # Claimed early or stale (another worker answered meanwhile): set it right.
            await self._set_right(session_id, session)

    async def _set_right(self, session_id: str, session: Session) -> None:
        """Set the outbox's due time from ``session``, a read in which nothing was due (a
        write from it alone would undo the due time of a refund another worker asked
        since: it would be out of the effects index, never tried)."""
        engine = self.service.engine

        async def due(latest: Session) -> None:
            await engine.schedule_effects(session_id, latest.next_effect_at())

        if not await self.service.written_from_latest(session_id, session, due):
            # Saved again and again meanwhile: looked at once more soon, never left stale.
            retry_at = self.service.clock() + self.service.rules.effect_retry_base_ms
            await engine.schedule_effects(session_id, retry_at)

    async def _call(self, session: Session, effect: GatewayEffect) -> EffectOutcome:
        charge_key = idempotency_key(session.id, effect.attempt)
        ref = provider_ref(session, effect.attempt)
        key = effect.key(session.id)
        try:
            async with asyncio.timeout(self.call_timeout):
                with provider_call(effect.kind, key):
                    charged = await self._ask(effect, charge_key, ref, key)
        except EngineUnavailable:
            raise  # nothing can be recorded either; the lease runs out and it is retried
        except (GatewayError, TimeoutError, OSError) as exc:
            metrics.effect_attempt(effect.kind, "failed")
            error = str(exc) or type(exc).__name__
            return EffectOutcome(
                effect.kind, effect.attempt, False, error, self.jitter(), number=effect.number
            )
        except Exception as exc:
            log.exception("the provider adapter failed on %s", key)
            metrics.effect_attempt(effect.kind, "failed")
            return EffectOutcome(
                effect.kind,
                effect.attempt,
                False,
                f"{type(exc).__name__}: {exc}",
                self.jitter(),
                number=effect.number,
            )
        metrics.effect_attempt(effect.kind, "ok")
        return EffectOutcome(
            effect.kind, effect.attempt, True, charged=charged, number=effect.number
        )

    async def _ask(self, effect: GatewayEffect, charge_key: str, ref: str | None, key: str) -> bool:
        """Call the provider for ``effect``; True when the money has moved (a capture
        taken, a void that found it charged)."""
        gateway = self.service.gateway
        if effect.kind == REFUND:
            if effect.amount is not None:
                await gateway.refund(charge_key, ref, key, amount=effect.amount)
            else:
                await gateway.refund(charge_key, ref, key)
            return False
        if effect.kind == CAPTURE:
            return await gateway.capture(charge_key, ref, key)
        if effect.kind == VOID:
            return await gateway.void(charge_key, ref, key)
        raise GatewayError(f"unknown effect kind {effect.kind!r}")


async def list_effects(
    engine: Engine, status: str, limit: int, session_id: str | None = None
) -> list[dict[str, object]]:
    """Effects (``status`` pending, done or all), the most recently decided first: of
    one session, or of the sessions whose outbox is the most recent."""
    if session_id is not None:
        session = await engine.load(session_id)
        sessions = [] if session is None else [session]
    else:
        sessions = await engine.list_with_effects(status == PENDING, limit)
    effects = [
        (effect.created_at, effect.to_public(session.id))
        for session in sessions
        for effect in session.effects
        if status == "all" or effect.status == status
    ]
    effects.sort(key=lambda pair: pair[0], reverse=True)
    return [public for _, public in effects[:limit]]
