"""The service's I/O paths with a real memory engine and a scripted provider: what
happens when the provider fails to charge, void or refund."""

from __future__ import annotations

import pytest

from paylive.core.machine import Cancel, Charge, ProviderResult, StartAttempt, Tick
from paylive.engine.memory import MemoryEngine
from paylive.errors import ApiError
from paylive.gateway import ChargeReply, Gateway, GatewayError
from paylive.service.payments import PaymentService
from paylive.settings import load_settings

pytestmark = pytest.mark.anyio

CARD = {"card": "4242424242424242"}


class ScriptedGateway(Gateway):
    """A provider whose next answers the test writes down."""

    def __init__(self) -> None:
        self.charges: list[str] = []
        self.voids: list[str] = []
        self.refunds: list[str] = []
        self.charge_fails = False
        self.void_fails = False
        self.void_says_charged = False
        self.refund_failures = 0

    async def charge(self, charge: Charge) -> ChargeReply:
        self.charges.append(charge.key)
        if self.charge_fails:
            raise GatewayError("connection refused")
        return ChargeReply.ACCEPTED

    async def void(self, key: str) -> bool:
        self.voids.append(key)
        if self.void_fails:
            raise GatewayError("timeout")
        return self.void_says_charged

    async def refund(self, key: str) -> None:
        self.refunds.append(key)
        if self.refund_failures > 0:
            self.refund_failures -= 1
            raise GatewayError("busy")

    async def status(self, key: str) -> str | None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def parts() -> tuple[PaymentService, ScriptedGateway, Clock]:
    settings = load_settings({"PAYLIVE_ATTEMPT_TIMEOUT_MS": "1000", "PAYLIVE_RETRY_DELAY_MS": "0"})
    gateway, clock = ScriptedGateway(), Clock()
    return PaymentService(settings, MemoryEngine(settings), gateway, clock), gateway, clock


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
    with pytest.raises(ApiError) as refused:
        await service.run(session.id, StartAttempt())
    assert (refused.value.status, refused.value.code) == (503, "gateway_unavailable")
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


async def test_a_refund_is_retried_until_the_provider_takes_it(parts) -> None:
    service, gateway, _ = parts
    session = await service.create("o", 100, "EUR", {})
    await service.run(session.id, StartAttempt(CARD))
    await service.run(session.id, Cancel())
    gateway.refund_failures = 2
    await service.run(session.id, ProviderResult(1, "succeeded"))
    assert gateway.refunds == [f"{session.id}:1"] * 3
    stored = await service.get(session.id)
    assert stored.needs_review and stored.attempts[0].status == "refunded"


async def test_unknown_session_is_404(parts) -> None:
    service, _, _ = parts
    with pytest.raises(ApiError) as missing:
        await service.run("ps_nope", Cancel())
    assert missing.value.status == 404
