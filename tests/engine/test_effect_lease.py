"""Two workers' effect loops on one session whose provider answers slowly, on a real
Redis (found in a review, 2027-01).

A worker claims a session whose outbox is due with a lease and tries its due effects
one after the other. The lease is the session's score in the effects index, and every
save of the session writes that score again, from its outbox: the answer the worker
records for its first effect puts the session back as due at once, since the effects
after it are still due. The other worker's loop claims it within a poll and tries the
same effects, while the first goes on to them: the same refund is asked for twice at
once. Stripe holds an idempotency key while it works on a request and answers 409
``idempotency_key_in_use`` to another under it meanwhile, which paylive counted as a
failed try (a step toward review) for nothing but the overlap.

Here the provider is a real localstripe behind the fault proxy, which does refunds
half a second late and answers 409 as Stripe does; the effect loop's call timeout and
lease are short, through their variables, so every refund's first call times out.

The merchant events the same loop posts to the shop had the same gap: the answer
recorded for a session's first event is a save that makes the session due at once
while the next event is, and the other worker posted that next event beside the first
worker, which went on to it: a shop that answers slowly got each event twice at once
("at least once" allows a post twice, but a shop that handles both at once may do its
work twice). Here the shop is the suite's real receiver, answering every post late,
and the posts have their own short timeout.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from paylive.core.machine import ProviderResult, StartAttempt
from paylive.core.refunds import Refund
from paylive.engine.redis import RedisEngine
from paylive.gateway import create_gateway
from paylive.service.deliveries import Deliveries
from paylive.service.effects import EffectRunner
from paylive.service.payments import PaymentService
from paylive.service.webhooks import WebhookSender
from paylive.settings import Settings, load_settings

from ..support import redisproc
from ..support.faultproxy import FaultProxy
from ..support.localstripe import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET, LocalStripe
from ..support.receiver import Receiver
from .test_engine import needs_redis

pytestmark = [
    pytest.mark.anyio,
    # Stripe's library hands httpx its body as data=bytes (the server's own warning filter
    # is not the suite's, which makes every warning an error).
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]

OK = "4242424242424242"
REFUNDS = 3
# The provider does a refund this late; the loop gives up on a call well before, and
# tries it again only once the provider has done it (the retry lists it, then).
SLOW_S = 0.5
CALL_TIMEOUT_MS = 300
WAIT_S = 20.0


def settings_for(proxy: FaultProxy) -> Settings:
    return load_settings(
        {
            "PAYLIVE_GATEWAY": "stripe",
            "PAYLIVE_STRIPE_SECRET_KEY": SECRET_KEY,
            "PAYLIVE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "PAYLIVE_STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
            "PAYLIVE_STRIPE_API_BASE": proxy.url,
            "PAYLIVE_EFFECT_CALL_TIMEOUT_MS": str(CALL_TIMEOUT_MS),
            # Shorter than three calls that time out, longer than one and a post.
            "PAYLIVE_EFFECT_LEASE_MS": "700",
            "PAYLIVE_MERCHANT_WEBHOOK_TIMEOUT_MS": "100",
            # A failed try is made again 0.5 to 1 s later: after the provider did it.
            "PAYLIVE_EFFECT_RETRY_BASE_MS": "1000",
            "PAYLIVE_EFFECT_RETRY_CAP_MS": "1000",
        }
    )


@pytest.fixture
def lease_redis(tmp_path: Path) -> Iterator[redisproc.RedisProc]:
    server = redisproc.start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def slow_proxy(localstripe: LocalStripe) -> Iterator[FaultProxy]:
    proxy = FaultProxy(localstripe.url).start()
    try:
        yield proxy
    finally:
        proxy.close()


async def effect_loop(
    settings: Settings, service: PaymentService, runner: EffectRunner, stop: anyio.Event
) -> None:
    """One worker's effect loop, as the runtime's: claim the due sessions with the
    lease every poll, work on each in a task of its own."""
    async with anyio.create_task_group() as tasks:
        while not stop.is_set():
            claimed = await service.engine.claim_effects(
                service.clock(), settings.effect_batch, settings.outbox_lease_ms
            )
            for session_id in claimed:
                tasks.start_soon(runner.run_due, session_id)
            await anyio.sleep(settings.effect_poll_ms / 1000)


async def both_until(
    settings: Settings,
    services: list[PaymentService],
    runners: list[EffectRunner],
    done: Callable[[], Awaitable[bool]],
) -> None:
    """Both workers' effect loops, run until ``done()``."""
    stop = anyio.Event()
    async with anyio.create_task_group() as loops:
        for service, runner in zip(services, runners, strict=True):
            loops.start_soon(effect_loop, settings, service, runner, stop)
        with anyio.fail_after(WAIT_S):
            while not await done():
                await anyio.sleep(0.05)
        stop.set()


async def dies_mid_way(runner: EffectRunner, session_id: str, started: Callable[[], bool]) -> None:
    """``runner``'s worker dies in its work on ``session_id`` once ``started()``: the
    provider or the shop is still answering it."""
    async with anyio.create_task_group() as dying:
        dying.start_soon(runner.run_due, session_id)
        with anyio.fail_after(WAIT_S):
            while not started():
                await anyio.sleep(0.01)
        dying.cancel_scope.cancel()


async def workers(redis: redisproc.RedisProc, settings: Settings) -> list[PaymentService]:
    """Two workers' services, each with its own engine on ``redis`` and its own gateway."""
    services = []
    for _ in range(2):
        engine = RedisEngine(redis.url, settings.redis)
        await engine.start()
        services.append(PaymentService(settings.service, engine, create_gateway(settings, engine)))
    return services


async def refunds_owed(
    service: PaymentService, localstripe: LocalStripe, refunds: int
) -> tuple[str, str]:
    """A session paid at localstripe (authorized, then captured through the outbox) and
    ``refunds`` refunds of it asked for: its id and its PaymentIntent's."""
    session = await service.create("order-1", 100, "EUR", {})
    card = {"stripe": localstripe.payment_method(OK)}
    await service.run(session.id, StartAttempt(card))
    await EffectRunner(service, Deliveries(service, None)).run_due(session.id)
    paid = await service.get(session.id)
    assert paid.status == "succeeded", paid
    intent = paid.attempts[0].provider_ref
    assert intent is not None
    for _ in range(refunds):
        asked = await service.run(session.id, Refund(30, None, "merchant"))
        assert asked.decision.refusal is None, asked.decision.refusal
    return session.id, intent


async def closed(services: list[PaymentService]) -> None:
    for service in services:
        await service.gateway.close()
        await service.engine.close()


@pytest.mark.redis
@needs_redis
async def test_two_workers_never_ask_for_one_refund_at_once(
    lease_redis: redisproc.RedisProc, localstripe: LocalStripe, slow_proxy: FaultProxy
) -> None:
    settings = settings_for(slow_proxy)
    services = await workers(lease_redis, settings)
    try:
        a, b = services
        runners = [EffectRunner(s, Deliveries(s, None)) for s in services]
        session_id, intent = await refunds_owed(b, localstripe, REFUNDS)

        slow_proxy.slow("POST", r"^/v1/refunds$", SLOW_S)

        async def paid_back() -> bool:
            return not (await a.get(session_id)).owes

        await both_until(settings, services, runners, paid_back)
        final = await a.get(session_id)
    finally:
        await closed(services)

    assert slow_proxy.in_use == [], (
        "one refund was asked for twice at once: the provider refused the second call as"
        " idempotency_key_in_use, and paylive counted it as a failed try"
    )
    made = [r["metadata"]["paylive_effect"] for r in localstripe.refunds(intent)]
    assert sorted(made) == [f"{session_id}:1:refund.{n}" for n in range(1, REFUNDS + 1)]
    refunds = [e for e in final.effects if e.kind == "refund"]
    # Each refund's first call timed out (the provider was slow), and the next found it
    # made: no other try was counted.
    assert [(e.status, e.tries) for e in refunds] == [("done", 2)] * REFUNDS, [
        (e.number, e.tries, e.last_error) for e in refunds
    ]


@pytest.mark.redis
@needs_redis
async def test_a_try_whose_worker_died_mid_call_is_made_by_another_after_the_lease(
    lease_redis: redisproc.RedisProc, localstripe: LocalStripe, slow_proxy: FaultProxy
) -> None:
    settings = settings_for(slow_proxy)
    services = await workers(lease_redis, settings)
    try:
        a, b = services
        session_id, intent = await refunds_owed(a, localstripe, 1)
        slow_proxy.slow("POST", r"^/v1/refunds$", SLOW_S)
        posted = len(slow_proxy.seen)
        # Worker A dies while the provider works on its refund.
        await dies_mid_way(
            EffectRunner(a, Deliveries(a, None)),
            session_id,
            lambda: any(m == "POST" for m, _, _ in slow_proxy.seen[posted:]),
        )
        died_at = b.clock()
        survivor = EffectRunner(b, Deliveries(b, None))
        await survivor.run_due(session_id)
        left = (await b.get(session_id)).effects[-1]
        assert (left.pending, left.tries) == (True, 0), "made again while A's try was held"
        # Once A's hold has run out, B makes the try again and finds the refund made.
        with anyio.fail_after(WAIT_S):
            while (await b.get(session_id)).owes:
                await anyio.sleep(0.05)
                await survivor.run_due(session_id)
        assert b.clock() - died_at >= settings.outbox_lease_ms - 100
        done = (await b.get(session_id)).effects[-1]
    finally:
        await closed(services)
    assert (done.status, done.tries) == ("done", 1)
    assert slow_proxy.in_use == []
    made = [r["metadata"]["paylive_effect"] for r in localstripe.refunds(intent)]
    assert made == [f"{session_id}:1:refund.1"]


# The shop's secret (the receiver fixture's), and how late it answers each post: well
# within a post's timeout, and longer than the effect loop's poll.
RECEIVER_SECRET = "whsec_" + base64.b64encode(b"lease-merchant-secret-012").decode()
SHOP_SLOW_MS = 300


def shop_settings(receiver: Receiver) -> Settings:
    return load_settings(
        {
            "PAYLIVE_MERCHANT_WEBHOOK_URL": receiver.url,
            "PAYLIVE_MERCHANT_WEBHOOK_SECRET": RECEIVER_SECRET,
            # Every durable change makes an event: a session owes the shop several.
            "PAYLIVE_MERCHANT_EVENTS": "all",
            "PAYLIVE_RETRY_DELAY_MS": "0",
            "PAYLIVE_MERCHANT_WEBHOOK_TIMEOUT_MS": "1500",
            "PAYLIVE_EFFECT_CALL_TIMEOUT_MS": "500",
            # A claim posts for a third of the lease (a second: several slow posts one
            # after the other), and a dead worker's hold runs out 3 s after it was taken.
            "PAYLIVE_EFFECT_LEASE_MS": "3000",
        }
    )


def shop_for(settings: Settings, service: PaymentService) -> Deliveries:
    """A worker's merchant events, posted to the shop as the runtime posts them."""
    assert settings.merchant_webhook_url is not None
    sender = WebhookSender(
        settings.merchant_webhook_url,
        settings.merchant_webhook_secrets,
        settings.merchant_webhook_timeout_ms / 1000,
    )
    return Deliveries(service, sender)


async def events_owed(service: PaymentService) -> tuple[str, list[str]]:
    """A session paid on its third attempt, its merchant events listed and none posted
    yet: its id and the events' ids, in ``seq`` order."""
    session = await service.create("order-1", 100, "EUR", {})
    for result in ("declined", "declined", "succeeded"):
        await service.run(session.id, StartAttempt({"card": OK}))
        attempt = (await service.get(session.id)).attempt
        await service.run(session.id, ProviderResult(attempt, result))
    await EffectRunner(service, Deliveries(service, None)).run_due(session.id)
    owed = await service.get(session.id)
    assert owed.status == "succeeded" and all(d.listed for d in owed.deliveries), owed
    return session.id, [d.id for d in owed.deliveries]


def posts_of(receiver: Receiver, session_id: str) -> list[dict[str, Any]]:
    """The posts the shop got for ``session_id``, in arrival order."""
    return [p for p in receiver.seen()["arrivals"] if p.get("session") == session_id]


@pytest.mark.redis
@needs_redis
async def test_two_workers_never_post_one_event_at_once(
    lease_redis: redisproc.RedisProc, receiver: Receiver
) -> None:
    settings = shop_settings(receiver)
    services = await workers(lease_redis, settings)
    shops = [shop_for(settings, s) for s in services]
    try:
        a = services[0]
        session_id, owed = await events_owed(a)
        receiver.set(slow=1_000, slow_ms=SHOP_SLOW_MS)

        async def delivered() -> bool:
            return not (await a.get(session_id)).deliveries

        runners = [EffectRunner(s, shop) for s, shop in zip(services, shops, strict=True)]
        await both_until(settings, services, runners, delivered)
    finally:
        receiver.set(slow=0)
        for shop in shops:
            await shop.close()
        await closed(services)

    posts = posts_of(receiver, session_id)
    assert [(p["id"], p["beside"]) for p in posts if p["beside"]] == [], (
        "an event was posted to the shop by two workers at once"
    )
    # Nothing timed out: each event was posted once, in seq order.
    assert [p["id"] for p in posts] == owed


@pytest.mark.redis
@needs_redis
async def test_a_post_whose_worker_died_mid_way_is_made_by_another_after_the_lease(
    lease_redis: redisproc.RedisProc, receiver: Receiver
) -> None:
    settings = shop_settings(receiver)
    services = await workers(lease_redis, settings)
    shops = [shop_for(settings, s) for s in services]
    try:
        a, b = services
        session_id, owed = await events_owed(a)
        receiver.set(slow=1_000, slow_ms=SHOP_SLOW_MS)
        # Worker A dies while the shop answers its post of the first event.
        await dies_mid_way(
            EffectRunner(a, shops[0]), session_id, lambda: bool(posts_of(receiver, session_id))
        )
        died_at = b.clock()
        survivor = EffectRunner(b, shops[1])
        await survivor.run_due(session_id)
        assert len(posts_of(receiver, session_id)) == 1, "posted again while A's try was held"
        head = (await b.get(session_id)).deliveries[0]
        assert (head.id, head.attempts) == (owed[0], 0)
        # Once A's hold has run out, B posts the event again, then the others.
        with anyio.fail_after(WAIT_S):
            while (await b.get(session_id)).deliveries:
                await anyio.sleep(0.05)
                await survivor.run_due(session_id)
        assert b.clock() - died_at >= settings.outbox_lease_ms - 100
    finally:
        receiver.set(slow=0)
        for shop in shops:
            await shop.close()
        await closed(services)
    posts = posts_of(receiver, session_id)
    assert [p["id"] for p in posts] == [owed[0], *owed]
    assert [p["beside"] for p in posts] == [0] * len(posts)
