"""The merchant outbox worker (service/outbox.py) on the memory engine, with a clock of
its own and a scripted shop: seeded random lives in which the shop fails, answers and
comes back, and saves keep adding events while deliveries are retried."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from paylive.core.merchant import MerchantEvent
from paylive.core.session import Session
from paylive.engine.memory import MemoryEngine
from paylive.service.outbox import Outbox, outbox_item
from paylive.service.webhooks import Attempt
from paylive.settings import Settings

pytestmark = pytest.mark.anyio

T0 = 1_764_000_000_000
SETTINGS = Settings(
    merchant_backoff_ms=100, merchant_backoff_cap_ms=2_000, merchant_retry_for_ms=60_000
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


class Shop:
    """Answers each post from a script: ok, or a failure of some kind."""

    def __init__(self, rng: random.Random, failure_rate: float) -> None:
        self.rng = rng
        self.failure_rate = failure_rate
        self.posts: list[dict[str, object]] = []
        self.accepted: list[dict[str, object]] = []

    async def post(self, body: bytes) -> Attempt:
        event = json.loads(body)
        self.posts.append(event)
        if self.rng.random() < self.failure_rate:
            return Attempt(False, 503, "HTTP 503")
        self.accepted.append(event)
        return Attempt(True, 200, None)

    async def close(self) -> None:
        return None


def event(session_id: str, seq: int, at: int) -> MerchantEvent:
    session = {"id": session_id, "status": "succeeded", "seq": seq}
    return MerchantEvent(f"evt_{session_id}_{seq}", "session.updated", at, session, seq, "x", "y")


async def start(engine: MemoryEngine, session_id: str) -> Session:
    session = Session(session_id, "o", 1, "EUR", T0, T0 + 10**9, 3)
    await engine.create(session, {}, b"")
    return session


@pytest.mark.parametrize("seed", range(20))
async def test_random_lives_deliver_everything_in_order(seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    engine = MemoryEngine(SETTINGS)
    shop = Shop(rng, failure_rate=rng.choice([0.0, 0.3, 0.7]))
    outbox = Outbox(SETTINGS, engine, clock, shop)  # type: ignore[arg-type]
    sessions = {f"ps_{i}": await start(engine, f"ps_{i}") for i in range(rng.randint(1, 5))}
    made: dict[str, list[int]] = {sid: [] for sid in sessions}
    for _ in range(400):
        if rng.random() < 0.3:
            # A save adds events to a session's outbox while others are retried.
            sid = rng.choice(list(sessions))
            s = sessions[sid]
            new = replace(s, seq=s.seq + 1)
            items = [outbox_item(event(sid, new.seq, clock.now))]
            assert await engine.save(new, s.version, [b"e"], {}, outbox=items)
            sessions[sid] = replace(new, version=s.version + 1)
            made[sid].append(new.seq)
        for sid in await engine.outbox_claim(clock.now, 100, SETTINGS.outbox_lease_ms):
            await outbox.work(sid)
        clock.now += rng.randint(1, 300)
    # Let the retries run out: the shop stops failing.
    shop.failure_rate = 0.0
    for _ in range(200):
        clock.now += SETTINGS.merchant_backoff_cap_ms
        for sid in await engine.outbox_claim(clock.now, 100, SETTINGS.outbox_lease_ms):
            await outbox.work(sid)
    assert await engine.outbox_pending() == 0

    for sid, seqs in made.items():
        accepted = [e["seq"] for e in shop.accepted if e["session"]["id"] == sid]  # type: ignore[index]
        posted = [e["seq"] for e in shop.posts if e["session"]["id"] == sid]  # type: ignore[index]
        assert accepted == seqs  # every event, once accepted, in seq order
        assert posted == sorted(posted)  # never one before an earlier one was accepted
    logged = [json.loads(raw)["event"] for _, raw in await engine.log_read(0, 10_000)]
    assert len(logged) == sum(len(v) for v in made.values())
    for sid, seqs in made.items():
        assert [e["seq"] for e in logged if e["session"]["id"] == sid] == seqs


async def test_given_up_after_the_window_then_sent_again() -> None:
    clock = Clock()
    engine = MemoryEngine(SETTINGS)
    shop = Shop(random.Random(1), failure_rate=1.0)
    outbox = Outbox(SETTINGS, engine, clock, shop)  # type: ignore[arg-type]
    s = await start(engine, "ps_x")
    first, second = event("ps_x", 1, T0), event("ps_x", 2, T0)
    await engine.save(
        replace(s, seq=2), 0, [b"e"], {}, outbox=[outbox_item(first), outbox_item(second)]
    )
    while await engine.outbox_pending():
        for sid in await engine.outbox_claim(clock.now, 10, SETTINGS.outbox_lease_ms):
            await outbox.work(sid)
        clock.now += 500
    # The first failed for good after the window; only then was the second tried.
    [failed, other] = sorted(await outbox.deliveries(True, 10), key=lambda d: d["seq"])
    assert failed["status"] == other["status"] == "failed"
    assert failed["last_attempt_at"] - failed["since"] >= SETTINGS.merchant_retry_for_ms
    assert min(p["seq"] for p in shop.posts[-other["attempts"] :]) == 2  # type: ignore[type-var]
    first_posts = [p for p in shop.posts if p["seq"] == 1]
    assert len(first_posts) == failed["attempts"] > 5  # backoff, not a tight loop

    shop.failure_rate = 0.0
    again = await outbox.send_again(failed["id"], None)  # the failed one kept its body
    assert again.status == "pending" and again.resent == 1
    for sid in await engine.outbox_claim(clock.now, 10, SETTINGS.outbox_lease_ms):
        await outbox.work(sid)
    assert [e["id"] for e in shop.accepted] == [failed["id"]]
    assert [d["id"] for d in await outbox.deliveries(True, 10)] == [other["id"]]
    # Sending again does not list the event twice.
    assert len(await engine.log_read(0, 10)) == 2
