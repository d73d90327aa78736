"""load -> decide -> save+publish -> charge: the only place commands become I/O.

Every command on a session, whoever sends it (HTTP, socket, webhook, timer, the
effect loop), runs through ``PaymentService.run``: it loads the session, asks the
pure machine, voids at the gateway when the machine needs it, saves with
compare-and-set (a lost race is decided again on the fresh state) and then asks the
gateway for a charge. Refunds, releases of holds and captures are not made here:
they are saved in the session's outbox with the decision, and ``effects.py`` carries
them out.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from .. import metrics
from ..core import stats
from ..core.codec import Encoded, Message
from ..core.evolve import evolve
from ..core.machine import (
    Charge,
    Command,
    Decision,
    NeedsVoid,
    ProviderResult,
    Reference,
    Tick,
    decide,
    new_session,
)
from ..core.merchant import queue_events
from ..core.outbox import owe_archive
from ..core.protocol import ErrorCode
from ..core.session import A_PROCESSING, Session, idempotency_key
from ..engine import AuditAdd, Engine, EngineUnavailable
from ..errors import Refused
from ..gateway import ChargeReply, Gateway, GatewayError
from ..settings import ServiceSettings
from ..telemetry import context, tracing
from .audit import for_save

log = logging.getLogger("paylive.service")

MAX_RACES = 16
# The loop time by which every provider call of the current request (or timer) must
# be over: set by the outermost ``run`` or ``check``, shared by the calls nested in
# it (a charge remembers its reference through ``run``).
_DEADLINE: ContextVar[float | None] = ContextVar("paylive_provider_deadline", default=None)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_session_id() -> str:
    return "ps_" + secrets.token_urlsafe(18).replace("-", "x").replace("_", "y")


def session_id_for(asked: str) -> str:
    """The id of the session a create request names (``asked``, a hex digest), shaped
    as ``new_session_id``'s."""
    raw = base64.urlsafe_b64encode(bytes.fromhex(asked)[:18]).decode()
    return "ps_" + raw.replace("-", "x").replace("_", "y")


@dataclass(frozen=True)
class Outcome:
    session: Session
    decision: Decision


# What a provider says when money was taken or is held for the shop.
MONEY_MOVED = frozenset({"succeeded", "authorized"})


def _unheld(event_id: str, session_id: str, result: ProviderResult) -> None:
    """A provider's result for a session this store does not hold: purged after its
    retention (a webhook more than that late), or never made here. It is still refused
    (404: the provider sends it again, and a store restored meanwhile takes it), and
    counted; when it says money moved, it is an error in the log, because nobody here
    will refund it: someone must look at the provider."""
    moved = result.outcome in MONEY_MOVED
    metrics.UNHELD_RESULTS.labels("moved" if moved else "none").inc()
    with context.bound(session=session_id):
        if moved:
            log.error(
                "provider event %s says %s for attempt %d of a session paylive does not "
                "hold (purged or never made): the money may have moved; look at the provider",
                event_id,
                result.outcome,
                result.attempt,
            )
        else:
            log.warning(
                "provider event %s (%s) is for a session paylive does not hold",
                event_id,
                result.outcome,
            )


def _created_notice(session: Session, at: int) -> bytes:
    """The admin channel's notice of a new session."""
    return Encoded.of(
        Message("admin.created", {"session": session.to_public()}, session.id, 0, at)
    ).json


class PaymentService:
    def __init__(
        self,
        settings: ServiceSettings,
        engine: Engine,
        gateway: Gateway,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.gateway = gateway
        self.clock = clock
        self.rules = settings.rules

    async def create(
        self,
        order_id: str,
        amount: int,
        currency: str,
        metadata: dict[str, object],
        asked: str | None = None,
    ) -> Session:
        """A new session; with ``asked`` (``request_digest`` of the request's
        Idempotency-Key and body), the one that request made already, if any. Its kept
        answer can be gone while the session stands (the engine's reply to the create
        was lost, so the key was let go for a retry): the id named after the request
        is what lets the retry find the session rather than make a second one."""
        session_id = new_session_id() if asked is None else session_id_for(asked)
        if asked is not None:
            made = await self.engine.load(session_id)
            if made is not None:
                return await self._made_already(made)
        now = self.clock()
        session = new_session(
            session_id, order_id, amount, currency, dict(metadata), now, self.rules
        )
        session = evolve(session, trace=context.current_traceparent())
        with context.bound(session=session.id):
            tracing.annotate(tracing.SESSION_ATTRIBUTE, session.id)
            stored = await self.engine.create(
                session, stats.delta(None, session), _created_notice(session, now)
            )
            if not stored:
                # The lost create of this very request landed after the read above:
                # the session it made is the answer (a random id never meets another).
                found = await self.engine.load(session_id)
                if asked is None or found is None:
                    raise EngineUnavailable(f"session {session_id} could not be created")
                return await self._made_already(found)  # as it is stored, not as made here
            log.info("session created: %d %s for order %r", amount, currency, order_id)
        return session

    async def _made_already(self, made: Session) -> Session:
        """``made``, the session a keyed create's earlier try made. The lost create may
        have stopped inside the engine (on Redis Cluster, after the session's own keys
        and before its indexes, counters, timer and admin notice): still at version 0,
        the engine completes it with its own created_at, expiry and notice, or changes
        nothing."""
        if made.version == 0:
            await self.engine.finish_create(
                made, stats.delta(None, made), _created_notice(made, made.created_at)
            )
        return made

    async def get(self, session_id: str) -> Session:
        session = await self.engine.load(session_id)
        if session is None:
            raise Refused(ErrorCode.NOT_FOUND, f"no session {session_id}")
        return session

    @contextlib.contextmanager
    def _deadline(self) -> Iterator[float]:
        """The provider deadline of this request: the one already running, or a new one
        ``provider_deadline_ms`` from now."""
        held = _DEADLINE.get()
        if held is not None:
            yield held
            return
        deadline = asyncio.get_running_loop().time() + self.settings.provider_deadline_ms / 1000
        token = _DEADLINE.set(deadline)
        try:
            yield deadline
        finally:
            _DEADLINE.reset(token)

    async def run(
        self, session_id: str, command: Command, audit: dict[str, object] | None = None
    ) -> Outcome:
        """Apply ``command``; raise Refused ``not_found`` for an unknown session. A refusal is
        returned in ``decision.refusal`` (changes may still have been saved with it:
        a void that found the money moved makes the session succeed and refuses the retry).
        Every provider call it makes ends by one deadline (``provider_deadline_ms``).

        ``audit``: who asked (an entry of the audit trail without its time), written into
        the session with the change it made, so it is recorded exactly when that is;
        the engine adds it to the trail of every session in the same save where it
        can (``Engine.saves_audit``), else ``AuditTrail.recorded`` copies it.

        Work with no trace of its own (a timer firing, on any worker) continues the
        trace the session carries; whatever is saved carries the current one."""
        with (
            self._deadline(),
            contextlib.ExitStack() as spans,
            context.bound(session=session_id),
        ):
            return await self._run(session_id, command, spans, audit)

    async def _run(
        self,
        session_id: str,
        command: Command,
        spans: contextlib.ExitStack,
        audit: dict[str, object] | None,
    ) -> Outcome:
        voids: dict[int, bool] = {}
        voided_refs: dict[int, str | None] = {}
        # The engine may answer load_for_update from a copy that is a little stale:
        # a decision that saves is checked by the save's compare-and-set, but one that
        # saves nothing (a refusal, a void to make first) is made again on a fresh read.
        fresh = False
        for _ in range(MAX_RACES):
            load = self.engine.load if fresh else self.engine.load_for_update
            session = await load(session_id)
            if session is None:
                raise Refused(ErrorCode.NOT_FOUND, f"no session {session_id}")
            if context.trace.get() is None:
                spans.enter_context(
                    tracing.span(
                        f"paylive {type(command).__name__}",
                        parent=context.parse_traceparent(session.trace),
                    )
                )
            for number, ref in list(voided_refs.items()):
                if provider_ref(session, number) != ref:
                    # The attempt's payment was named after its void was asked (the
                    # gateway was confirming it): the answer is stale, ask again.
                    del voids[number], voided_refs[number]
            now = self.clock()
            result = decide(session, command, now, self.rules, voids)
            if not fresh and (isinstance(result, NeedsVoid) or not result.to_save):
                fresh = True
                continue
            if isinstance(result, NeedsVoid):
                for number in result.attempts:
                    voided_refs[number] = provider_ref(session, number)
                    voids[number] = await self._void(session_id, number, voided_refs[number])
                fresh = False
                continue
            if result.to_save:
                # The merchant events it makes go into the outbox, saved with it.
                result = queue_events(session, result, self.rules)
                carried = context.current_traceparent()
                if carried is not None and carried != result.session.trace:
                    result = evolve(result, session=evolve(result.session, trace=carried))
                to_trail: AuditAdd | None = None
                if audit is not None and result.refusal is None:
                    entry = {**audit, "at": now, "session": session_id}
                    result = evolve(result, session=result.session.with_audit(entry))
                    to_trail = for_save(entry)
                result = owe_archive(session, result, self.rules, now)
                events = [Encoded.of(message) for message in result.events]
                delta = stats.delta(session, result.session)
                delta.update(stats.minute_delta(result.events))
                # The records its charges start by claiming go with the save (on one
                # Redis: in the same script, no round trip of their own).
                claims = [
                    made for charge in result.charges for made in self.gateway.charge_claims(charge)
                ]
                saved = await self.engine.save(
                    result.session,
                    session.version,
                    [event.handed() for event in events],
                    delta,
                    claims,
                    to_trail,
                )
                if not saved:
                    metrics.CAS_CONFLICTS.inc()
                    continue
                metrics.observe_events(result, delta)
                await self._charge(result)
            elif isinstance(command, Tick):
                # Nothing was due after all (a stale or early timer): set it right.
                await self._set_timer_right(session_id, session)
            return Outcome(result.session, result)
        raise Refused(ErrorCode.CONFLICT, "the session changed too often; try again")

    async def written_from_latest(
        self, session_id: str, session: Session, write: Callable[[Session], Awaitable[None]]
    ) -> bool:
        """``write`` something derived from ``session`` (a read) outside a save, checked:
        a save by another worker since that read wrote its own value, which a write from
        the older read would undo. So the session is read again after the write, and
        the write made again from that read while the version has moved. Once a read
        after the write finds the version the write was made from, every save to come
        is later than the write and sets its own. False when the session was saved
        again and again meanwhile (``MAX_RACES`` times): the caller sets a value that
        makes it looked at again soon."""
        for _ in range(MAX_RACES):
            await write(session)
            fresh = await self.engine.load(session_id)
            if fresh is None or fresh.version == session.version:
                return True
            session = fresh
        return False

    async def _set_timer_right(self, session_id: str, session: Session) -> None:
        """Set the session's timer from ``session``, a read in which nothing was due (a
        write from it alone would undo the deadline of an attempt another worker started
        since: it would not time out before the session's expiry)."""

        async def due(latest: Session) -> None:
            await self.engine.schedule(session_id, latest.next_due())

        if not await self.written_from_latest(session_id, session, due):
            await self.engine.schedule(session_id, self.clock())  # looked at again at once

    async def tick(self, session_id: str) -> None:
        try:
            await self.run(session_id, Tick())
        except Refused as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                await self.engine.schedule(session_id, None)
            else:
                raise

    async def provider_event(
        self, event_id: str, session_id: str, result: ProviderResult
    ) -> Outcome | None:
        """Apply a provider's result that came as event ``event_id`` (a webhook); None
        when that event was applied before. Providers deliver at least once: the event
        id is remembered after the result is applied, and the machine applies a result
        to an attempt at most once whatever the event id, so a retry racing the first
        delivery changes nothing either."""
        seen = f"webhook:{event_id}"
        if await self.engine.get(seen) is not None:
            return None
        try:
            outcome = await self.run(session_id, result)
        except Refused as exc:
            if exc.code == ErrorCode.NOT_FOUND:
                _unheld(event_id, session_id, result)
            raise
        refusal = outcome.decision.refusal
        if refusal is not None and refusal.code == ErrorCode.UNKNOWN_ATTEMPT:
            # Answered 404 so that the provider sends it again (docs/protocol.md 3.2):
            # remembered, its next delivery would be a ``duplicate`` and never applied.
            return outcome
        await self.engine.put(seen, b"1", self.settings.retention_after_end_ms)
        with context.bound(session=session_id):
            log.info("provider event %s applied: %s", event_id, result.outcome)
        return outcome

    async def check(self, session_id: str) -> Session:
        """Ask the provider about the attempt in flight now (the page finished a step
        such as 3-D Secure) rather than wait for its webhook; apply what it says."""
        session = await self.get(session_id)
        attempt = session.current
        if attempt is None or attempt.status != A_PROCESSING:
            return session
        key = idempotency_key(session_id, attempt.number)
        with self._deadline() as deadline:
            try:
                async with asyncio.timeout_at(deadline):
                    with context.bound(session=session_id), provider_call("lookup", key):
                        result = await self.gateway.lookup(key, attempt.provider_ref)
            except TimeoutError:
                # No word from the provider in time: its webhook (or the attempt's
                # timeout) decides, as when it has nothing to say yet.
                metrics.PROVIDER_DEADLINE.inc()
                return session
            if result is None:
                return session
            return (await self.run(session_id, result)).session

    async def _void(self, session_id: str, number: int, ref: str | None) -> bool:
        key = idempotency_key(session_id, number)
        try:
            async with asyncio.timeout_at(_DEADLINE.get()):
                with provider_call("void", key):
                    return await self.gateway.void(key, ref)
        except TimeoutError as exc:
            metrics.PROVIDER_DEADLINE.inc()
            raise Refused(
                ErrorCode.GATEWAY_UNAVAILABLE, "the provider did not confirm the void in time"
            ) from exc
        except GatewayError as exc:
            raise Refused(
                ErrorCode.GATEWAY_UNAVAILABLE, "the provider cannot confirm the void; try again"
            ) from exc

    async def _charge(self, decision: Decision) -> None:
        for charge in decision.charges:
            await self._ask_charge(decision.session, charge)

    async def _ask_charge(self, session: Session, charge: Charge) -> None:
        async def remember(ref: str) -> bool:
            outcome = await self.run(session.id, Reference(charge.attempt, ref))
            return outcome.decision.refusal is None

        try:
            async with asyncio.timeout_at(_DEADLINE.get()):
                with provider_call("charge", charge.key):
                    reply = await self.gateway.charge(charge, remember)
        except TimeoutError:
            # Asked, and no answer by the deadline: the charge may be under way at the
            # provider. Nothing is recorded, so the attempt stays in flight: its webhook
            # or its timeout decides (a timeout voids it, an unknown outcome never
            # taken for a failure), and the request holding its locks ends now.
            metrics.PROVIDER_DEADLINE.inc()
            log.warning("the charge of %s got no answer within the provider deadline", charge.key)
            return
        except (GatewayError, EngineUnavailable, Refused):
            reply = ChargeReply.NETWORK_ERROR
        shown = reply.value if isinstance(reply, ChargeReply) else reply.outcome
        log.info("charge %s asked of the provider: %s", charge.key, shown)
        if reply is ChargeReply.ACCEPTED:
            return
        if reply is ChargeReply.NETWORK_ERROR:
            reply = ProviderResult(charge.attempt, "network_error")
        try:
            await self.run(session.id, reply)
        except EngineUnavailable:
            # The attempt is saved with its deadline: when that passes, a worker
            # times it out and voids it. Nothing is lost by waiting.
            log.warning("could not record the answer to the charge of %s yet", charge.key)
        except Refused as exc:
            log.warning("the answer to the charge of %s: %s", charge.key, exc.message)


def provider_call(operation: str, key: str) -> contextlib.AbstractContextManager[tracing.Span]:
    """The span of one call to the payment provider (the gateway adds its request id)."""
    return tracing.span(
        f"provider {operation}",
        kind="client",
        attributes={"paylive.provider.operation": operation, "paylive.idempotency_key": key},
    )


def provider_ref(session: Session, number: int) -> str | None:
    attempt = session.attempt_by_number(number)
    return attempt.provider_ref if attempt is not None else None
