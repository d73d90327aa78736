"""The service's I/O paths with a real memory engine and a scripted provider: what
happens when the provider fails to charge, void, refund or capture, and how the
effect runner carries out the outbox."""

from __future__ import annotations

import asyncio
import time

import anyio
import pytest

from paylive.core.machine import (
    Cancel,
    Charge,
    ProviderResult,
    Reference,
    Refund,
    ResolveReview,
    StartAttempt,
    Tick,
)
from paylive.core.outbox import EffectOutcome
from paylive.core.protocol import ErrorCode
from paylive.engine import EngineUnavailable
from paylive.engine.memory import MemoryEngine
from paylive.errors import Refused
from paylive.gateway import ChargeReply, Gateway, GatewayError, Remember
from paylive.service.deliveries import Deliveries
from paylive.service.effects import EffectRunner, list_effects
from paylive.service.idempotency import IdempotencyKeys, request_digest
from paylive.service.payments import PaymentService
from paylive.settings import load_settings

from ..support.core import CARD

pytestmark = pytest.mark.anyio


class ScriptedGateway(Gateway):
    """A provider whose next answers the test writes down."""

    def __init__(self) -> None:
        self.charges: list[str] = []
        self.voids: list[str] = []
        self.refunds: list[tuple[str, str]] = []
        self.amounts: list[int | None] = []
        self.captures: list[tuple[str, str]] = []
        self.charge_fails = False
        self.void_fails = False
        self.void_says_charged = False
        self.refund_failures = 0
        self.capture_failures = 0

    async def charge(self, charge: Charge, remember: Remember) -> ChargeReply:
        self.charges.append(charge.key)
        if self.charge_fails:
            raise GatewayError("connection refused")
        return ChargeReply.ACCEPTED

    async def void(self, key: str, ref: str | None, idempotency_key: str | None = None) -> bool:
        self.voids.append(key)
        if self.void_fails:
            raise GatewayError("timeout")
        return self.void_says_charged

    async def refund(
        self, key: str, ref: str | None, idempotency_key: str, amount: int | None = None
    ) -> None:
        self.refunds.append((key, idempotency_key))
        self.amounts.append(amount)
        if self.refund_failures > 0:
            self.refund_failures -= 1
            raise GatewayError("busy")

    async def capture(self, key: str, ref: str | None, idempotency_key: str) -> bool:
        self.captures.append((key, idempotency_key))
        if self.capture_failures > 0:
            self.capture_failures -= 1
            raise GatewayError("busy")
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


ENV = {
    "PAYLIVE_ATTEMPT_TIMEOUT_MS": "1000",
    "PAYLIVE_RETRY_DELAY_MS": "0",
    "PAYLIVE_EFFECT_RETRY_BASE_MS": "100",
    "PAYLIVE_EFFECT_RETRY_CAP_MS": "400",
    "PAYLIVE_EFFECT_REVIEW_AFTER_MS": "1000",
}


@pytest.fixture
def parts() -> tuple[PaymentService, ScriptedGateway, Clock]:
    settings = load_settings(ENV)
    gateway, clock = ScriptedGateway(), Clock()
    return (
        PaymentService(settings.service, MemoryEngine(settings.engine), gateway, clock),
        gateway,
        clock,
    )


async def run_effects(service: PaymentService, clock: Clock, jitter: float = 0.0) -> list[str]:
    """One round of the effect loop, as the runtime does it: claim what is due, run it."""
    runner = EffectRunner(service, Deliveries(service, None), jitter=lambda: jitter)
    claimed = await service.engine.claim_effects(clock.now, 100, 15_000)
    for session_id in claimed:
        await runner.run_due(session_id)
    return claimed


async def late_success_after_cancel(service: PaymentService) -> str:
    session = await service.create("o", 100, "EUR", {})
    await service.run(session.id, StartAttempt(CARD))
    await service.run(session.id, Cancel())
    await service.run(session.id, ProviderResult(1, "succeeded"))
    return session.id


async def test_a_charge_that_cannot_reach_the_provider_is_a_network_error(parts) -> None:
    service, gateway, _ = parts
    session = await service.create("o", 100, "EUR", {})
    gateway.charge_fails = True
    outcome = await service.run(session.id, StartAttempt(CARD))
    assert gateway.charges == [f"{session.id}:1"]
    stored = await service.get(session.id)
    assert stored.status == "interrupted"
    assert stored.attempts[0].status == "network_error"
    assert outcome.decision.refusal is None


async def test_a_void_the_provider_cannot_confirm_starts_nothing(parts) -> None:
    service, gateway, clock = parts
    session = await service.create("o", 100, "EUR", {})
    await service.run(session.id, StartAttempt(CARD))
    clock.now += 1000
    await service.run(session.id, Tick())
    before = await service.get(session.id)
    assert before.status == "interrupted"
    gateway.void_fails = True
    with pytest.raises(Refused) as refused:
        await service.run(session.id, StartAttempt())
    assert refused.value.code == "gateway_unavailable"
    after = await service.get(session.id)
    assert after == before, "nothing changed"
    assert gateway.charges == [f"{session.id}:1"], "no second charge"


async def test_a_void_that_finds_the_money_moved_answers_already_paid(parts) -> None:
    service, gateway, clock = parts
    session = await service.create("o", 100, "EUR", {})
    await service.run(session.id, StartAttempt(CARD))
    clock.now += 1000
    await service.run(session.id, Tick())
    gateway.void_says_charged = True
    outcome = await service.run(session.id, Cancel())
    assert outcome.decision.refusal is not None
    assert outcome.decision.refusal.code == "already_paid"
    assert (await service.get(session.id)).status == "succeeded"


async def test_a_refund_is_saved_with_the_decision_and_retried_until_the_provider_takes_it(
    parts,
) -> None:
    service, gateway, clock = parts
    session_id = await late_success_after_cancel(service)
    assert gateway.refunds == [], "not called in the request: it waits in the outbox"
    stored = await service.get(session_id)
    assert stored.needs_review and stored.attempts[0].status == "refunded"
    assert [(e.kind, e.status) for e in stored.effects] == [("refund", "pending")]
    gateway.refund_failures = 2
    assert await run_effects(service, clock) == [session_id]
    failed = (await service.get(session_id)).effects[0]
    assert (failed.tries, failed.last_error, failed.next_at) == (1, "busy", clock.now + 50)
    assert await run_effects(service, clock) == [], "not due again before its backoff"
    for _ in range(2):
        clock.now += 400
        await run_effects(service, clock)
    key = (f"{session_id}:1", f"{session_id}:1:refund")
    assert gateway.refunds == [key] * 3, "the same idempotency key every time"
    done = await service.get(session_id)
    assert (done.effects[0].status, done.effects[0].tries) == ("done", 3)
    clock.now += 10_000
    assert await run_effects(service, clock) == []
    assert len(gateway.refunds) == 3, "never again once the provider confirmed"
    assert await list_effects(service.engine, "pending", 10) == []
    listed = await list_effects(service.engine, "all", 10)
    assert [(e["id"], e["status"]) for e in listed] == [(key[1], "done")]


async def test_a_try_whose_answer_was_not_saved_is_made_again_with_the_same_key(parts) -> None:
    service, gateway, clock = parts
    session_id = await late_success_after_cancel(service)
    # A worker claims the effect, calls the provider and dies before saving the answer.
    assert await service.engine.claim_effects(clock.now, 100, 15_000) == [session_id]
    await gateway.refund(f"{session_id}:1", None, f"{session_id}:1:refund")
    clock.now += 5_000
    assert await run_effects(service, clock) == [], "leased to the dead worker"
    clock.now += 10_000
    assert await run_effects(service, clock) == [session_id]
    assert {k for _, k in gateway.refunds} == {f"{session_id}:1:refund"}
    assert (await service.get(session_id)).effects[0].status == "done"


async def test_an_answer_that_could_not_be_saved_is_tried_again_after_the_retry_delay(
    parts,
) -> None:
    """A busy session refuses the record of an effect's answer: the effect is due again
    after PAYLIVE_EFFECT_RETRY_BASE_MS (100 ms here), not when its 15 s lease runs out."""
    service, gateway, clock = parts
    session_id = await late_success_after_cancel(service)
    saving = service.run
    refusals = []

    async def busy_once(sid, command, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(command, EffectOutcome) and not refusals:
            refusals.append(command)
            raise Refused(ErrorCode.CONFLICT, "the session changed too often; try again")
        return await saving(sid, command, *args, **kwargs)

    service.run = busy_once  # type: ignore[method-assign]
    assert await run_effects(service, clock) == [session_id]
    assert len(refusals) == 1 and (await service.get(session_id)).effects[0].pending
    clock.now += 99
    assert await run_effects(service, clock) == [], "not before the retry delay"
    clock.now += 1
    assert await run_effects(service, clock) == [session_id]
    assert (await service.get(session_id)).effects[0].status == "done"
    assert {k for _, k in gateway.refunds} == {f"{session_id}:1:refund"}


async def test_an_effect_failing_past_the_review_time_flags_the_session(parts) -> None:
    service, gateway, clock = parts
    session = await service.create("o", 100, "EUR", {})
    await service.run(session.id, StartAttempt(CARD))
    await service.run(session.id, ProviderResult(1, "authorized"))
    gateway.capture_failures = 100
    start = clock.now
    for _ in range(20):
        await run_effects(service, clock, jitter=0.5)
        stored = await service.get(session.id)
        if stored.needs_review:
            break
        clock.now = stored.next_effect_at()
    assert clock.now == start + 1_000, "flagged when the review time came"
    assert stored.status == "processing" and stored.needs_review
    assert stored.effects[0].pending and stored.effects[0].tries >= 4
    refused = (await service.run(session.id, ResolveReview("ana", "x"))).decision.refusal
    assert refused is not None and refused.code == "effects_pending"
    gateway.capture_failures = 0
    clock.now = stored.next_effect_at()
    await run_effects(service, clock)
    assert (await service.get(session.id)).status == "succeeded", "paid once captured"
    outcome = await service.run(session.id, ResolveReview("ana", "captured in the end"))
    assert outcome.decision.refusal is None
    assert outcome.session.review == {"by": "ana", "note": "captured in the end", "at": clock.now}
    assert gateway.captures[-1] == (f"{session.id}:1", f"{session.id}:1:capture")


async def test_unknown_session_is_404(parts) -> None:
    service, _, _ = parts
    with pytest.raises(Refused) as missing:
        await service.run("ps_nope", Cancel())
    assert missing.value.code == "not_found"


class NamingGateway(ScriptedGateway):
    """While the first void is asked, the charge in flight names its payment (as a
    Stripe charge saves its PaymentIntent id before confirming it)."""

    def __init__(self) -> None:
        super().__init__()
        self.service: PaymentService | None = None
        self.void_refs: list[str | None] = []

    async def void(self, key: str, ref: str | None, idempotency_key: str | None = None) -> bool:
        self.void_refs.append(ref)
        if len(self.void_refs) == 1 and self.service is not None:
            await self.service.run(key.rpartition(":")[0], Reference(1, "pi_1"))
        return False


async def test_a_void_asked_before_the_payment_was_named_is_asked_again() -> None:
    settings = load_settings({"PAYLIVE_ATTEMPT_TIMEOUT_MS": "1000"})
    gateway = NamingGateway()
    service = PaymentService(settings.service, MemoryEngine(settings.engine), gateway, Clock())
    gateway.service = service
    session = await service.create("o", 100, "EUR", {})
    await service.run(session.id, StartAttempt(CARD))
    outcome = await service.run(session.id, Cancel())
    assert gateway.void_refs == [None, "pi_1"], "the stale answer was not trusted"
    assert outcome.session.status == "cancelled"
    assert outcome.session.attempts[0].provider_ref == "pi_1"


async def test_a_capture_is_made_through_the_outbox_and_never_after_a_release(parts) -> None:
    service, gateway, clock = parts
    paid = await service.create("o", 100, "EUR", {})
    await service.run(paid.id, StartAttempt(CARD))
    await service.run(paid.id, ProviderResult(1, "authorized", provider_ref="pi_1"))
    assert gateway.captures == [], "not called in the request: it waits in the outbox"
    assert (await service.get(paid.id)).status == "processing", "a hold is not money"
    await run_effects(service, clock)
    assert gateway.captures == [(f"{paid.id}:1", f"{paid.id}:1:capture")]
    assert (await service.get(paid.id)).status == "succeeded"
    # A hold whose capture fails until the attempt times out: the retry's void releases
    # it, and the capture is never made.
    released = await service.create("o", 100, "EUR", {})
    await service.run(released.id, StartAttempt(CARD))
    await service.run(released.id, ProviderResult(1, "authorized", provider_ref="pi_2"))
    gateway.capture_failures = 1
    await run_effects(service, clock)
    clock.now += 1_000
    await service.run(released.id, Tick())
    retried = await service.run(released.id, StartAttempt())
    assert retried.decision.refusal is None
    effects = [(e.kind, e.status) for e in retried.session.effects]
    assert effects == [("capture", "cancelled"), ("void", "pending")]
    clock.now += 10_000
    await run_effects(service, clock)
    assert [k for k, _ in gateway.captures].count(f"{released.id}:1") == 1, "only the failed try"
    # The known hold's release is confirmed once more through the outbox.
    assert gateway.voids.count(f"{released.id}:1") == 2


class HangingGateway(ScriptedGateway):
    """A provider that answers a void after ``void_s`` and never answers a charge."""

    def __init__(self, void_s: float = 0.0) -> None:
        super().__init__()
        self.void_s = void_s
        self.charge_hangs = True

    async def charge(self, charge: Charge, remember: Remember) -> ChargeReply:
        if self.charge_hangs:
            self.charges.append(charge.key)
            await anyio.sleep(3600)
        return await super().charge(charge, remember)

    async def void(self, key: str, ref: str | None, idempotency_key: str | None = None) -> bool:
        self.voids.append(key)
        await anyio.sleep(self.void_s)
        return False


def hanging(void_s: float) -> tuple[PaymentService, HangingGateway, Clock]:
    settings = load_settings({**ENV, "PAYLIVE_PROVIDER_DEADLINE_MS": "300"})
    gateway, clock = HangingGateway(void_s), Clock()
    return (
        PaymentService(settings.service, MemoryEngine(settings.engine), gateway, clock),
        gateway,
        clock,
    )


async def test_a_charge_with_no_answer_ends_the_request_at_the_deadline() -> None:
    """The request returns by the deadline; the attempt stays in flight (its outcome
    unknown, not a failure) until its timeout, which voids it."""
    service, gateway, clock = hanging(void_s=0)
    session = await service.create("o", 100, "EUR", {})
    started = time.monotonic()
    with anyio.fail_after(5):
        outcome = await service.run(session.id, StartAttempt(CARD))
    assert 0.25 <= time.monotonic() - started < 1.5
    assert outcome.decision.refusal is None
    stored = await service.get(session.id)
    assert stored.status == "processing" and stored.attempts[0].status == "processing"
    clock.now += 1000  # the attempt's timeout
    with anyio.fail_after(5):
        await service.run(session.id, Tick())
        gateway.charge_hangs = False
        await service.run(session.id, StartAttempt())
    retried = await service.get(session.id)
    assert gateway.voids == [f"{session.id}:1"], "the unknown attempt was voided first"
    assert [a.status for a in retried.attempts] == ["voided", "processing"]


async def test_every_provider_call_of_one_request_shares_one_deadline() -> None:
    """A void taking most of the deadline leaves the charge after it only the rest."""
    service, gateway, clock = hanging(void_s=0.2)
    session = await service.create("o", 100, "EUR", {})
    with anyio.fail_after(5):
        await service.run(session.id, StartAttempt(CARD))
    clock.now += 1000
    await service.run(session.id, Tick())  # timed out: a void is due before a retry
    started = time.monotonic()
    with anyio.fail_after(5):
        await service.run(session.id, StartAttempt())
    took = time.monotonic() - started
    assert gateway.voids and len(gateway.charges) == 2
    assert took < 0.6, f"void 0.2 s + a hanging charge took {took:.2f} s, not one 0.3 s deadline"


async def test_a_void_with_no_answer_by_the_deadline_starts_nothing() -> None:
    service, gateway, clock = hanging(void_s=3600)
    session = await service.create("o", 100, "EUR", {})
    with anyio.fail_after(5):
        await service.run(session.id, StartAttempt(CARD))
    clock.now += 1000
    await service.run(session.id, Tick())
    before = await service.get(session.id)
    with anyio.fail_after(5), pytest.raises(Refused) as refused:
        await service.run(session.id, StartAttempt())
    assert refused.value.code == "gateway_unavailable"
    assert await service.get(session.id) == before, "nothing changed"
    assert len(gateway.charges) == 1, "no second charge"


async def test_an_expiry_whose_void_keeps_failing_is_flagged_not_forgotten(parts) -> None:
    """Every expiry tick asks for the void of the attempt in doubt; once the provider
    has refused it for the review time, the session expires flagged for review and the
    void goes on in the outbox (which keeps the session) until it is confirmed."""
    service, gateway, clock = parts
    session = await service.create("o", 100, "EUR", {})
    await service.run(session.id, StartAttempt(CARD))
    clock.now += 1000
    await service.run(session.id, Tick())  # timed out: its outcome is unknown
    gateway.void_fails = True
    clock.now = session.expires_at
    with pytest.raises(Refused) as refused:
        await service.tick(session.id)
    assert refused.value.code == "gateway_unavailable"
    assert (await service.get(session.id)).status == "interrupted", "still waiting for it"
    clock.now = session.expires_at + 1000  # PAYLIVE_EFFECT_REVIEW_AFTER_MS later
    await service.tick(session.id)
    expired = await service.get(session.id)
    assert expired.status == "expired" and expired.needs_review
    assert [(e.kind, e.attempt, e.pending) for e in expired.effects] == [("void", 1, True)]
    await run_effects(service, clock)
    assert (await service.get(session.id)).effects[0].pending, "the provider still refuses"
    gateway.void_fails = False
    clock.now = (await service.get(session.id)).next_effect_at()
    await run_effects(service, clock)
    done = await service.get(session.id)
    assert done.effects[0].status == "done" and not done.pending_effects
    assert len(gateway.charges) == 1, "never a second charge"
    resolved = await service.run(session.id, ResolveReview("ana", "void confirmed"))
    assert resolved.decision.refusal is None and not resolved.session.needs_review


async def test_racing_refunds_take_the_remaining_amount_once(parts) -> None:
    """Twenty refunds of 60 out of 100 at once, from two services (two workers) on one
    engine: the compare-and-set lets exactly one be decided, and the provider is asked
    once, for 60, under its own key."""
    service, gateway, clock = parts
    other = PaymentService(service.settings, service.engine, gateway, clock)
    session = await service.create("o", 100, "EUR", {})
    await service.run(session.id, StartAttempt(CARD))
    await service.run(session.id, ProviderResult(1, "succeeded"))
    for s in (service, other):
        await s.engine.load_for_update(session.id)  # each holds its own copy

    async def ask(s: PaymentService) -> str:
        try:
            refusal = (await s.run(session.id, Refund(60, None, "merchant"))).decision.refusal
        except Refused as exc:
            return str(exc.code)
        return "ok" if refusal is None else str(refusal.code)

    answers = await asyncio.gather(*(ask(service if i % 2 else other) for i in range(20)))
    assert answers.count("ok") == 1, answers
    assert set(answers) <= {"ok", "refund_exceeds_captured", "conflict"}
    await run_effects(service, clock)
    assert gateway.refunds == [(f"{session.id}:1", f"{session.id}:1:refund.1")]
    assert gateway.amounts == [60]
    done = await service.get(session.id)
    assert done.amount_refunded == 60 and done.refundable == 40


class LateCreate(MemoryEngine):
    """A memory engine on which the create of an earlier try of the same request lands
    between the retry's read and its create, as a Redis create whose reply was lost
    and that was still queued can."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.landing: tuple[object, ...] | None = None

    async def load(self, session_id: str):  # type: ignore[no-untyped-def]
        found = await super().load(session_id)
        landing, self.landing = self.landing, None
        if landing is not None:
            await super().create(*landing)  # type: ignore[arg-type]
        return found


async def test_a_keyed_create_that_meets_its_lost_twin_answers_with_the_twin() -> None:
    settings = load_settings(ENV)
    engine = LateCreate(settings.engine)
    service = PaymentService(settings.service, engine, ScriptedGateway(), Clock())
    # The lost try's session, made under the same request's id, and paid on since.
    elsewhere = PaymentService(settings.service, MemoryEngine(settings.engine),
                               ScriptedGateway(), Clock())  # fmt: skip
    made = await elsewhere.create("o", 100, "EUR", {}, asked="d1")
    await elsewhere.run(made.id, StartAttempt(CARD))
    twin = await elsewhere.engine.load(made.id)
    assert twin is not None and twin.status == "processing"
    engine.landing = (twin, {"status:processing": 1}, b"n")

    answer = await service.create("o", 100, "EUR", {}, asked="d1")

    assert answer == twin
    assert await engine.load(twin.id) == twin
    assert await engine.counters() == {"status:processing": 1}
    unkeyed = await service.create("o", 100, "EUR", {})
    assert unkeyed.id != twin.id


class LosesReply(MemoryEngine):
    """A memory engine whose next save is made and its reply lost, as on a Redis whose
    answer to the save script never came back: the session is saved, the caller is
    told the engine is unavailable."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.losing = False

    async def save(self, *args, **kwargs) -> bool:  # type: ignore[no-untyped-def]
        saved = await super().save(*args, **kwargs)
        if self.losing:
            self.losing = False
            raise EngineUnavailable("the reply to the save was lost")
        return saved


async def test_a_keyed_pay_whose_reply_was_lost_is_answered_with_its_attempt_again() -> None:
    """The save was made and the key let go (docs/protocol.md 3.1): the same request
    again is answered with the attempt it started, not refused ``invalid_state`` (which
    the key would then keep for a day), and nothing more is decided or charged."""
    settings = load_settings(ENV)
    engine = LosesReply(settings.engine)
    gateway = ScriptedGateway()
    service = PaymentService(settings.service, engine, gateway, Clock())
    keys = IdempotencyKeys(engine, settings.idempotency_ttl_ms)
    session = await service.create("o", 100, "EUR", {})
    body = {"payment_method": CARD}

    async def pay(key: str, sent: dict[str, object]) -> tuple[int, dict[str, object]]:
        async def handler() -> tuple[int, dict[str, object]]:
            command = StartAttempt(CARD, request=request_digest(key, sent))
            outcome = await service.run(session.id, command)
            refusal = outcome.decision.refusal
            if refusal is not None:
                return 409, {"error": refusal.code}
            return 202, outcome.session.to_public()

        return await keys.run_once(f"attempts {session.id}", key, sent, handler)

    engine.losing = True
    with pytest.raises(EngineUnavailable):
        await pay("pay-1", body)
    saved = await service.get(session.id)
    assert saved.status == "processing" and gateway.charges == []

    status, answer = await pay("pay-1", body)

    assert (status, answer["status"], answer["attempt"]) == (202, "processing", 1)
    assert await service.get(session.id) == saved
    assert gateway.charges == []
    # Kept now: the same request a third time is the same answer.
    assert await pay("pay-1", body) == (status, answer)
    # Another request, under a key of its own, is decided as ever.
    assert (await pay("pay-2", body))[0] == 409
