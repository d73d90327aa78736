"""The effect loop against a second worker, on a real Redis (found in a review,
2026-12-08).

A worker that claims a session with nothing due (claimed early, or stale: a retry time
left after a refused record, a Cluster hint of a save that lost) sets the session's
effect due time right. It set it from its first read of the session, so a refund
another worker saved between that read and that write was unscheduled: the write
took it out of the effects index, and the refund was never tried, its session kept
forever because it owes one. On Redis the read and the write are two round trips
apart, and a save from another process can land between them.

The memory engine has no such window: its ``load`` and ``schedule_effects`` never
await, and nothing between them in ``EffectRunner`` does when nothing is due (the
merchant events' ``run_due`` returns before any await when none is due), so no other
task can save in between on the one event loop.

The timer loop had the same window (found 2026-12-08): a timer that fired with nothing
due wrote the session's next due time from its read, so an attempt another worker
started right after that read lost its deadline to the session's expiry.

The interleaving is driven with the engines' own API: the first worker's ``load``
lets the second worker's request be made right after its read came back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest

from paylive.core.machine import ProviderResult, StartAttempt
from paylive.core.refunds import Refund
from paylive.core.session import Session
from paylive.engine import Engine
from paylive.engine.memory import MemoryEngine
from paylive.engine.redis import RedisEngine
from paylive.service.deliveries import Deliveries
from paylive.service.effects import EffectRunner
from paylive.service.payments import PaymentService
from paylive.settings import load_settings

from ..support import redisproc
from ..support.core import CARD
from ..support.redisproc import RedisProc
from ..unit.test_service import ENV, Clock, ScriptedGateway
from .test_engine import needs_redis

pytestmark = pytest.mark.anyio

SETTINGS = load_settings(ENV)
LEASE_MS = 15_000


@pytest.fixture(scope="module")
def races_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    server = redisproc.start_redis(tmp_path_factory.mktemp("races"))
    try:
        yield server
    finally:
        server.stop()


def after_read(engine: Engine, then: Callable[[], Awaitable[None]]) -> None:
    """Run ``then`` once, right after ``engine``'s next ``load`` has read the session
    (another worker's request that lands while this worker holds its read)."""
    original = engine.load
    pending = [then]

    async def load(session_id: str) -> Session | None:
        session = await original(session_id)
        while pending:
            await pending.pop()()
        return session

    engine.load = load  # type: ignore[method-assign]


def runner(service: PaymentService) -> EffectRunner:
    """The effect loop's runner as the runtime makes it (no webhooks to post)."""
    return EffectRunner(service, Deliveries(service, None), jitter=lambda: 0.0)


async def paid(service: PaymentService) -> str:
    """A session paid, its merchant events listed: its outbox owes nothing."""
    session = await service.create("order-1", 100, "EUR", {})
    await service.run(session.id, StartAttempt(CARD))
    await service.run(session.id, ProviderResult(1, "succeeded", provider_ref="sbx_1"))
    await runner(service).run_due(session.id)
    done = await service.get(session.id)
    assert done.status == "succeeded" and not done.owes
    return session.id


async def a_refund_saved_while_a_stale_claim_is_set_right(a: Engine, b: Engine) -> list[str]:
    """Worker A claims a session with nothing due; worker B's refund request is saved
    right after A read it. Whatever claims the outbox next (the ids)."""
    clock, gateway = Clock(), ScriptedGateway()
    service_a = PaymentService(SETTINGS.service, a, gateway, clock)
    service_b = PaymentService(SETTINGS.service, b, gateway, clock)
    sid = await paid(service_a)
    # A due time with nothing due behind it (say, a retry set after a refused record).
    await a.schedule_effects(sid, clock.now)
    assert await a.claim_effects(clock.now, 10, LEASE_MS) == [sid]

    async def refund_on_b() -> None:
        outcome = await service_b.run(sid, Refund(30, None, "merchant"))
        assert outcome.decision.refusal is None

    after_read(a, refund_on_b)
    await runner(service_a).run_due(sid)
    owed = await b.load(sid)
    assert owed is not None and [e.pending for e in owed.effects] == [True]
    return await b.claim_effects(clock.now + LEASE_MS, 10, LEASE_MS)


@pytest.mark.redis
@needs_redis
async def test_a_refund_saved_by_another_worker_while_a_claim_is_set_right_stays_due(
    races_redis: RedisProc,
) -> None:
    races_redis.flushall()
    a = RedisEngine(races_redis.url, SETTINGS.redis)
    b = RedisEngine(races_redis.url, SETTINGS.redis)
    await a.start()
    await b.start()
    try:
        claimed = await a_refund_saved_while_a_stale_claim_is_set_right(a, b)
    finally:
        await a.close()
        await b.close()
    assert len(claimed) == 1, "the refund was taken out of the effects index: never tried"


async def test_the_memory_engine_has_no_window_between_the_read_and_the_write() -> None:
    """What keeps the memory engine safe (see the module docstring): a refund request
    and a stale claim's run on one event loop, started together in either order, never
    leave the refund unscheduled."""
    import asyncio

    for refund_first in (False, True):
        engine = MemoryEngine(SETTINGS.engine)
        clock, gateway = Clock(), ScriptedGateway()
        service = PaymentService(SETTINGS.service, engine, gateway, clock)
        sid = await paid(service)
        await engine.schedule_effects(sid, clock.now)
        assert await engine.claim_effects(clock.now, 10, LEASE_MS) == [sid]
        run = runner(service).run_due(sid)
        asked = service.run(sid, Refund(30, None, "merchant"))
        await asyncio.gather(*((asked, run) if refund_first else (run, asked)))
        refunded = await engine.load(sid)
        assert refunded is not None
        if refunded.owes:
            assert await engine.claim_effects(clock.now + LEASE_MS, 10, LEASE_MS) == [sid]
        else:
            assert refund_first, "the claim that found nothing due made the refund"
            assert gateway.amounts == [30]


# The timers had the same window ----------------------------------------------------------


async def a_pay_saved_while_a_stale_timer_is_set_right(a: Engine, b: Engine) -> list[str]:
    """Worker A's timer fires on a session with nothing due; worker B starts an attempt
    right after A read it. Whatever the timer loop claims at that attempt's deadline."""
    clock, gateway = Clock(), ScriptedGateway()
    service_a = PaymentService(SETTINGS.service, a, gateway, clock)
    service_b = PaymentService(SETTINGS.service, b, gateway, clock)
    sid = (await service_a.create("order-1", 100, "EUR", {})).id
    # A timer with nothing due behind it (early, or left by a save that lost).
    await a.schedule(sid, clock.now)
    assert await a.claim_due(clock.now, 10, LEASE_MS) == [sid]

    async def pay_on_b() -> None:
        outcome = await service_b.run(sid, StartAttempt(CARD))
        assert outcome.decision.refusal is None

    after_read(a, pay_on_b)
    await service_a.tick(sid)
    paying = await b.load(sid)
    assert paying is not None and paying.status == "processing" and paying.deadline is not None
    assert paying.deadline < paying.expires_at
    return await b.claim_due(paying.deadline, 10, LEASE_MS)


@pytest.mark.redis
@needs_redis
async def test_an_attempt_started_by_another_worker_while_a_timer_is_set_right_times_out(
    races_redis: RedisProc,
) -> None:
    races_redis.flushall()
    a = RedisEngine(races_redis.url, SETTINGS.redis)
    b = RedisEngine(races_redis.url, SETTINGS.redis)
    await a.start()
    await b.start()
    try:
        claimed = await a_pay_saved_while_a_stale_timer_is_set_right(a, b)
    finally:
        await a.close()
        await b.close()
    assert claimed != [], "the attempt's deadline was overwritten by the session's expiry"
    assert len(claimed) == 1
