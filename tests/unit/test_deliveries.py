"""Merchant events through the outbox (service/deliveries.py), on the memory engine with
a clock of its own, a scripted provider and a scripted shop: seeded random lives in
which the shop fails and comes back while sessions keep changing, giving up and
"send again", a shop that answers slowly next to a refund, and the pending gauge."""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import replace
from typing import Any

import pytest

from paylive import metrics
from paylive.core.codec import dumps_strict
from paylive.core.machine import Cancel, Command, ProviderResult, StartAttempt, Tick
from paylive.core.merchant import read_log_record
from paylive.core.outbox import DeliveryOutcome
from paylive.core.protocol import ErrorCode
from paylive.engine.memory import MemoryEngine
from paylive.errors import Refused
from paylive.service.deliveries import BUSY_RETRY_MS, Deliveries
from paylive.service.effects import EffectRunner
from paylive.service.payments import PaymentService
from paylive.service.webhooks import Attempt, WebhookSender
from paylive.settings import Settings, SettingsError, load_settings

from .test_service import CARD, Clock, ScriptedGateway

pytestmark = pytest.mark.anyio

SETTINGS = Settings(
    attempt_timeout_ms=1_000,
    retry_delay_ms=0,
    merchant_webhook_url="http://127.0.0.1:9/shop",
    merchant_webhook_secrets=("whsec_" + "A" * 32,),
    merchant_events="all",
    merchant_backoff_ms=100,
    merchant_backoff_cap_ms=2_000,
    merchant_retry_for_ms=60_000,
)


class Shop:
    """Answers each post from a script: ok, or a failure; ``gate`` holds posts back."""

    def __init__(self, rng: random.Random, failure_rate: float) -> None:
        self.rng = rng
        self.failure_rate = failure_rate
        self.posts: list[dict[str, Any]] = []
        self.accepted: list[dict[str, Any]] = []
        self.gate: asyncio.Event | None = None

    async def post(self, body: bytes, message_id: str) -> Attempt:
        event = json.loads(body)
        assert message_id == event["id"], "webhook-id is the event's own id"
        self.posts.append(event)
        if self.gate is not None:
            await self.gate.wait()
        if self.rng.random() < self.failure_rate:
            return Attempt(False, 503, "HTTP 503")
        self.accepted.append(event)
        return Attempt(True, 200, None)

    async def close(self) -> None:
        return None


class World:
    def __init__(self, shop: Shop | None, settings: Settings = SETTINGS) -> None:
        self.clock = Clock()
        self.gateway = ScriptedGateway()
        self.engine = MemoryEngine(settings.engine)
        self.service = PaymentService(settings.service, self.engine, self.gateway, self.clock)
        self.deliveries = Deliveries(self.service, shop, jitter=lambda: 0.5)  # type: ignore[arg-type]
        self.runner = EffectRunner(self.service, self.deliveries, jitter=lambda: 0.5)

    async def loop(self) -> list[str]:
        """One round of the effect loop, as the runtime runs it."""
        claimed = await self.engine.claim_effects(self.clock.now, 100, SETTINGS.outbox_lease_ms)
        for session_id in claimed:
            await self.runner.run_due(session_id)
        return claimed

    async def logged(self) -> list[dict[str, Any]]:
        return [json.loads(raw)["event"] for _, raw in await self.engine.log_read(0, 10_000)]


def of(events: list[dict[str, Any]], session_id: str, key: str = "id") -> list[Any]:
    return [e[key] for e in events if e["session"]["id"] == session_id]


@pytest.mark.parametrize("seed", range(20))
async def test_random_lives_deliver_every_event_once_in_order(seed: int) -> None:
    rng = random.Random(seed)
    shop = Shop(rng, failure_rate=rng.choice([0.0, 0.3, 0.7]))
    world = World(shop)
    ids = [(await world.service.create("o", 100, "EUR", {})).id for _ in range(rng.randint(1, 4))]
    commands: list[Command] = [StartAttempt(CARD), Cancel(), Tick()]
    for _ in range(150):
        if rng.random() < 0.3:
            session_id = rng.choice(ids)
            session = await world.service.get(session_id)
            command = rng.choice(commands)
            if rng.random() < 0.3 and session.status == "processing":
                command = ProviderResult(session.attempt, rng.choice(["succeeded", "declined"]))
            await world.service.run(session_id, command)
        await world.loop()
        world.clock.now += rng.randint(1, 300)
    shop.failure_rate = 0.0  # the shop comes back: whatever waits goes
    for _ in range(50):
        world.clock.now += SETTINGS.merchant_backoff_cap_ms
        await world.loop()

    assert (await world.engine.counters()).get("deliveries_pending", 0) == 0
    logged = await world.logged()
    for session_id in ids:
        session = await world.service.get(session_id)
        assert session.deliveries == ()
        accepted = of(shop.accepted, session_id)
        assert accepted == of(logged, session_id)  # every event listed once, accepted once
        assert len(set(accepted)) == len(accepted)
        posted = of(shop.posts, session_id, "seq")
        assert posted == sorted(posted)  # never one before an earlier one was accepted
        # Every durable state change reached the shop (PAYLIVE_MERCHANT_EVENTS=all).
        history = [json.loads(raw) for raw in await world.engine.history(session_id, 0) or []]
        states = {m["seq"] for m in history if m["type"] == "state"}
        assert set(of(shop.accepted, session_id, "seq")) == states


async def test_listed_at_once_posted_in_order_given_up_then_sent_again() -> None:
    shop = Shop(random.Random(1), failure_rate=1.0)
    world = World(shop)
    session = await world.service.create("o", 100, "EUR", {})
    await world.service.run(session.id, StartAttempt(CARD))
    await world.service.run(session.id, Cancel())
    await world.loop()
    # The shop is down: both events are in the events log all the same, and only the
    # first was posted.
    assert [e["type"] for e in await world.logged()] == ["session.updated", "session.cancelled"]
    assert [p["seq"] for p in shop.posts] == [1]
    while (await world.service.get(session.id)).deliveries:
        world.clock.now += 500
        await world.loop()
    first, second = sorted(await world.deliveries.deliveries(True, 10), key=lambda d: d["seq"])
    assert first["status"] == second["status"] == "failed"
    assert first["last_attempt_at"] - first["since"] >= SETTINGS.merchant_retry_for_ms
    assert first["attempts"] > 5  # backoff, not a tight loop, and not once only
    assert min(p["seq"] for p in shop.posts[-second["attempts"] :]) == 2
    assert len([p for p in shop.posts if p["seq"] == 1]) == first["attempts"]

    shop.failure_rate = 0.0
    again, _, _ = await world.deliveries.send_again(
        first["id"], None
    )  # the failed one kept its body
    assert again["status"] == "pending" and again["resent"] == 1
    logged = await world.engine.log_get(first["id"])
    assert logged is not None
    with pytest.raises(Refused) as twice:  # as the route calls it: the body from the log
        await world.deliveries.send_again(first["id"], dumps_strict(read_log_record(logged)[0]))
    assert twice.value.code == "delivery_pending"
    await world.loop()
    assert [e["id"] for e in shop.accepted] == [first["id"]]
    assert [d["id"] for d in await world.deliveries.deliveries(True, 10)] == [second["id"]]
    assert len(await world.logged()) == 2  # sending again does not list it twice


async def test_an_event_of_a_forgotten_session_is_posted_once_at_once() -> None:
    shop = Shop(random.Random(1), failure_rate=1.0)
    world = World(shop)
    session = await world.service.create("o", 100, "EUR", {})
    await world.service.run(session.id, Cancel())
    while (await world.service.get(session.id)).deliveries:
        world.clock.now += 5_000
        await world.loop()
    [failed] = await world.deliveries.deliveries(True, 10)
    world.clock.now += 10 * SETTINGS.retention_after_end_ms
    await world.engine.claim_due(world.clock.now, 10, 1_000)  # purges ended sessions
    assert await world.engine.load(session.id) is None
    shop.failure_rate = 0.0
    again, _, _ = await world.deliveries.send_again(failed["id"], None)
    assert again["status"] == "delivered" and again["resent"] == 1
    assert [e["id"] for e in shop.accepted] == [failed["id"]]
    assert await world.deliveries.deliveries(True, 10) == []


async def test_a_slow_shop_never_holds_up_a_refund() -> None:
    shop = Shop(random.Random(1), failure_rate=0.0)
    shop.gate = asyncio.Event()  # every post hangs until the test lets it go
    world = World(shop, replace(SETTINGS, webhook_concurrency=1))
    slow = await world.service.create("o", 100, "EUR", {})
    await world.service.run(slow.id, Cancel())
    hung = asyncio.create_task(world.loop())  # takes the one post slot and waits
    while not shop.posts:
        await asyncio.sleep(0)
    owed = await world.service.create("o", 100, "EUR", {})
    await world.service.run(owed.id, StartAttempt(CARD))
    await world.service.run(owed.id, Cancel())
    await world.service.run(owed.id, ProviderResult(1, "succeeded"))  # late: refunded
    assert [e.kind for e in (await world.service.get(owed.id)).pending_effects] == ["refund"]
    async with asyncio.timeout(5):  # returns: nothing waits for the slow shop
        assert await world.loop() == [owed.id]
    after = await world.service.get(owed.id)
    assert after.pending_effects == () and world.gateway.refunds
    # Its own events are listed, and its first post is put off, not queued behind.
    assert {e["session"]["id"] for e in await world.logged()} >= {owed.id}
    assert await world.engine.claim_effects(world.clock.now, 10, 1_000) == []
    world.clock.now += BUSY_RETRY_MS
    shop.gate.set()
    await hung
    await world.loop()
    assert set(of(shop.accepted, owed.id, "type")) >= {"session.refunded", "session.cancelled"}


async def test_a_post_that_could_not_be_recorded_is_made_again_a_second_later() -> None:
    """The session refuses the record of a post (saved too often meanwhile): the event
    is posted again BUSY_RETRY_MS later, not when the 15 s lease runs out."""
    shop = Shop(random.Random(1), failure_rate=0.0)
    world = World(shop)
    session_id = (await world.service.create("o", 100, "EUR", {})).id
    await world.service.run(session_id, Cancel())  # session.cancelled is owed to the shop
    saving = world.service.run
    refusals: list[Command] = []

    async def busy_once(sid, command, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(command, DeliveryOutcome) and not refusals:
            refusals.append(command)
            raise Refused(ErrorCode.CONFLICT, "the session changed too often; try again")
        return await saving(sid, command, *args, **kwargs)

    world.service.run = busy_once  # type: ignore[method-assign]
    assert await world.loop() == [session_id]
    assert len(refusals) == 1 and len(shop.posts) == 1
    world.clock.now += BUSY_RETRY_MS - 1
    assert await world.loop() == [], "not before the busy delay"
    world.clock.now += 1
    assert await world.loop() == [session_id]
    assert [e["id"] for e in shop.posts] == [shop.posts[0]["id"]] * 2, "the same event again"
    assert not (await world.service.get(session_id)).deliveries, "recorded this time"


async def test_the_pending_gauge_follows_the_shop() -> None:
    shop = Shop(random.Random(1), failure_rate=1.0)
    world = World(shop)
    for _ in range(3):
        session = await world.service.create("o", 100, "EUR", {})
        await world.service.run(session.id, Cancel())
    await world.loop()
    counters = await world.engine.counters()
    metrics.observe_outbox(counters, None, world.clock.now)
    assert metrics.DELIVERIES_PENDING._value.get() == 3  # type: ignore[attr-defined]
    shop.failure_rate = 0.0
    world.clock.now += 10_000
    await world.loop()
    metrics.observe_outbox(await world.engine.counters(), None, world.clock.now)
    assert metrics.DELIVERIES_PENDING._value.get() == 0  # type: ignore[attr-defined]


# A webhook URL no client can post to (found in a review, 2026-12-07): it was accepted at
# start, and every post of it raised instead of failing, so the delivery was tried again
# after every lease, for ever, never recorded and never given up.
BAD_URL = "http://127.0.0.1:99999/hook"  # a typo'd port: not a URL any client can post to
SECRET = "whsec_" + "A" * 32


def test_a_webhook_url_no_client_can_post_to_stops_the_server() -> None:
    # "a bad value stops the server with a message naming the variable" (section 1)
    with pytest.raises(SettingsError, match="PAYLIVE_MERCHANT_WEBHOOK_URL"):
        load_settings(
            {
                "PAYLIVE_MERCHANT_WEBHOOK_URL": BAD_URL,
                "PAYLIVE_MERCHANT_WEBHOOK_SECRET": SECRET,
            }
        )


async def test_a_post_that_cannot_be_made_is_a_failure_and_is_given_up() -> None:
    """Section 6: anything but a 2xx is retried for PAYLIVE_MERCHANT_RETRY_FOR_MS,
    then the delivery is ``failed``; never retried for ever."""
    settings = replace(
        Settings(),
        merchant_webhook_url=BAD_URL,
        merchant_webhook_secrets=(SECRET,),
        merchant_backoff_ms=100,
        merchant_backoff_cap_ms=1_000,
        merchant_retry_for_ms=5_000,
    )
    clock = Clock()
    engine = MemoryEngine(settings.engine)
    service = PaymentService(settings.service, engine, ScriptedGateway(), clock)
    sender = WebhookSender(BAD_URL, (SECRET,), 1.0)
    deliveries = Deliveries(service, sender, jitter=lambda: 0.5)
    runner = EffectRunner(service, deliveries, jitter=lambda: 0.5)
    session = await service.create("o", 100, "EUR", {})
    await service.run(session.id, Cancel())  # session.cancelled is owed to the shop
    raised: list[str] = []
    try:
        for _ in range(60):  # 60 rounds, a lease apart: far past the 5 s window
            for claimed in await engine.claim_effects(clock.now, 10, settings.outbox_lease_ms):
                try:
                    await runner.run_due(claimed)
                except Exception as exc:  # the runtime logs it and waits for the lease
                    raised.append(type(exc).__name__)
            clock.now += settings.outbox_lease_ms
    finally:
        await sender.close()
    owed = (await service.get(session.id)).deliveries
    records = await deliveries.deliveries(False, 10)
    assert not raised, f"the post raised {raised[0]} ({len(raised)} times) instead of failing"
    assert owed == (), "the delivery is still owed after the retry window"
    assert [r["status"] for r in records] == ["failed"]


async def given_up() -> tuple[Shop, World, str, dict[str, Any], bytes]:
    """A cancelled session whose event the shop failed until it was given up, the shop
    now taking posts: (shop, world, session id, the failed delivery record, the event's
    body as the send again route reads it, from the log)."""
    shop = Shop(random.Random(1), failure_rate=1.0)
    world = World(shop)
    session = await world.service.create("o", 100, "EUR", {})
    await world.service.run(session.id, Cancel())
    while (await world.service.get(session.id)).deliveries:
        world.clock.now += 5_000
        await world.loop()
    [failed] = await world.deliveries.deliveries(True, 10)
    shop.failure_rate = 0.0
    logged = await world.engine.log_get(failed["id"])
    assert logged is not None
    return shop, world, session.id, failed, dumps_strict(read_log_record(logged)[0])


async def test_a_keyed_send_again_asked_again_is_answered_with_its_delivery() -> None:
    """The same request again (its kept answer lost) is answered with the delivery it
    queued: pending while it is, then its record once posted; never queued or posted
    a second time, and never audited twice (docs/protocol.md 3.1)."""
    shop, world, session_id, failed, body = await given_up()
    audit = {"id": "aud_1", "staff": "ana", "action": "send_again"}
    first, entry, saved = await world.deliveries.send_again(failed["id"], body, audit, "req-a")
    assert first["status"] == "pending" and entry is not None and saved
    again, entry, _ = await world.deliveries.send_again(
        failed["id"], body, {**audit, "id": "aud_2"}, "req-a"
    )
    assert (again["status"], again["resent"], entry) == ("pending", 1, None)
    await world.loop()
    assert [e["id"] for e in shop.accepted] == [failed["id"]]
    posted, entry, _ = await world.deliveries.send_again(
        failed["id"], body, {**audit, "id": "aud_3"}, "req-a"
    )
    assert (posted["status"], posted["resent"], entry) == ("delivered", 1, None)
    assert "body" not in posted
    await world.loop()
    assert [e["id"] for e in shop.accepted] == [failed["id"]], "posted once"
    kept = await world.service.get(session_id)
    assert [e["id"] for e in kept.audit] == ["aud_1"]


async def test_a_keyed_send_again_asked_again_after_its_record_was_pushed_out() -> None:
    """The same request again once its event was delivered and its record pushed out
    of the newest ``deliveries_kept`` (a busy shop: a thousand deliveries in the
    minute the key's lock takes to run out) was answered with an empty record: the
    route read its status and answered 500. It is answered with the delivery as
    delivered, queued and audited nothing."""
    shop, world, session_id, failed, body = await given_up()
    audit = {"id": "aud_1", "staff": "ana", "action": "send_again"}
    await world.deliveries.send_again(failed["id"], body, audit, "req-a")
    await world.loop()
    assert [e["id"] for e in shop.accepted] == [failed["id"]]
    for n in range(SETTINGS.engine.deliveries_kept):  # later deliveries, each done
        await world.engine.delivery_put(f"evt_other_{n}", b"{}", False, world.clock.now)
    assert await world.engine.delivery_get(failed["id"]) is None
    again, entry, _ = await world.deliveries.send_again(
        failed["id"], body, {**audit, "id": "aud_2"}, "req-a"
    )
    assert (again.get("id"), again.get("status"), entry) == (failed["id"], "delivered", None)
    await world.loop()
    assert [e["id"] for e in shop.accepted] == [failed["id"]], "posted once"
    kept = await world.service.get(session_id)
    assert [e["id"] for e in kept.audit] == ["aud_1"]
