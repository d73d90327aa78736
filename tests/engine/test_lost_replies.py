"""Writes whose reply from Redis is lost, on real engines: a real redis-server behind a
TCP proxy that lets the chosen command through and drops its reply.

- A merchant event posted to the shop and accepted, whose recording save reached
  Redis (docs/protocol.md section 6): the session no longer owes the event, so
  nothing posts it again; its delivery record must still say it was delivered. The
  suite's real receiver is the shop.
- The claim of a due timer or outbox: its lease alone brings the session back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from paylive.core.commands import Cancel
from paylive.engine import EngineUnavailable
from paylive.engine.redis import RedisEngine, scripts
from paylive.gateway import create_gateway
from paylive.service.deliveries import Deliveries
from paylive.service.effects import EffectRunner
from paylive.service.payments import PaymentService
from paylive.service.webhooks import Attempt, WebhookSender
from paylive.settings import load_settings

from ..support import redisproc
from ..support.receiver import Receiver
from ..support.tcpproxy import TcpProxy
from .test_engine import needs_redis

pytestmark = [pytest.mark.anyio, needs_redis]

RECEIVER_SECRET = "whsec_" + base64.b64encode(b"lost-reply-merchant-secret").decode()


class LosingSender(WebhookSender):
    """The real sender; once the shop has accepted a post, the reply to the next save
    (the one recording that answer) is lost."""

    def __init__(self, proxy: TcpProxy, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.proxy = proxy

    async def post(self, body: bytes, message_id: str) -> Attempt:
        answer = await super().post(body, message_id)
        if answer.ok:
            self.proxy.lose_reply(scripts.SAVE_ONE_NODE.sha.encode())
        return answer


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[TcpProxy]:
    server = redisproc.start_redis(tmp_path / "redis")
    proxy = TcpProxy(server.port).start()
    try:
        yield proxy
    finally:
        proxy.stop()
        server.stop()


async def test_a_delivery_whose_recording_reply_was_lost_is_recorded_delivered(
    proxied: TcpProxy, receiver: Receiver
) -> None:
    settings = load_settings(
        {
            "PAYLIVE_REDIS_URL": f"redis://127.0.0.1:{proxied.port}/0",
            "PAYLIVE_REDIS_TIMEOUT_MS": "1000",
            "PAYLIVE_SECRET": "test-signing-secret-0123456789",
            "PAYLIVE_MERCHANT_WEBHOOK_URL": receiver.url,
            "PAYLIVE_MERCHANT_WEBHOOK_SECRET": RECEIVER_SECRET,
            "PAYLIVE_MERCHANT_EVENTS": "all",
        }
    )
    engine = RedisEngine(settings.redis_url, settings.redis)
    await engine.start()
    try:
        service = PaymentService(settings.service, engine, create_gateway(settings, engine))
        sender = LosingSender(proxied, receiver.url, [RECEIVER_SECRET], 2.0)
        runner = EffectRunner(service, Deliveries(service, sender))
        session = await service.create("order-1", 100, "EUR", {})
        cancelled = await service.run(session.id, Cancel())
        [owed] = cancelled.session.deliveries
        with pytest.raises(EngineUnavailable):
            await runner.run_due(session.id)
        assert proxied.lost == 1
        after = await engine.load(session.id)
        assert after is not None and after.deliveries == (), "the answer was saved"
        held = await engine.delivery_get(owed.id)
        assert held is not None, "no delivery record for a post the shop accepted"
        assert json.loads(held)["status"] == "delivered", held
        await sender.close()
    finally:
        await engine.close()


@pytest.mark.parametrize("which", ["timers", "effects"])
async def test_a_claim_whose_reply_was_lost_is_claimed_again_once_its_lease_ran_out(
    proxied: TcpProxy, which: str
) -> None:
    """The claim moved the session's due time a lease ahead and nobody heard of it: the
    lease is what brings it back, no sooner (no second worker at once) and no later."""
    settings = load_settings(
        {
            "PAYLIVE_REDIS_URL": f"redis://127.0.0.1:{proxied.port}/0",
            "PAYLIVE_REDIS_TIMEOUT_MS": "1000",
            "PAYLIVE_SECRET": "test-signing-secret-0123456789",
        }
    )
    engine = RedisEngine(settings.redis_url, settings.redis)
    await engine.start()
    try:
        service = PaymentService(settings.service, engine, create_gateway(settings, engine))
        session = await service.create("order-1", 100, "EUR", {})
        now = service.clock()
        lease = 400
        if which == "timers":
            await engine.schedule(session.id, now)
            claim, script = engine.claim_due, scripts.CLAIM
        else:
            await engine.schedule_effects(session.id, now)
            claim, script = engine.claim_effects, scripts.CLAIM_EFFECTS
        assert await claim(now - 1, 10, lease) == []  # the script is loaded
        proxied.lose_reply(script.sha.encode())
        with pytest.raises(EngineUnavailable):
            await claim(now, 10, lease)
        assert proxied.lost == 1
        assert await claim(now + lease - 1, 10, lease) == [], "claimed twice within a lease"
        assert await claim(now + lease, 10, lease) == [session.id], "lost with the reply"
    finally:
        await engine.close()


async def test_an_answer_whose_keeping_reply_was_lost_is_still_given(proxied: TcpProxy) -> None:
    """The command ran and saved; only the reply to the SET keeping its answer for the
    key was lost. The client gets the answer the command made (before: 503
    engine_unavailable for a command that had worked, and every send of it again 409
    idempotency_key_in_use while the lock ran out, if the SET never landed)."""
    from paylive.service.idempotency import IdempotencyKeys

    settings = load_settings(
        {
            "PAYLIVE_REDIS_URL": f"redis://127.0.0.1:{proxied.port}/0",
            "PAYLIVE_REDIS_TIMEOUT_MS": "1000",
            "PAYLIVE_SECRET": "test-signing-secret-0123456789",
        }
    )
    engine = RedisEngine(settings.redis_url, settings.redis)
    await engine.start()
    try:
        keys = IdempotencyKeys(engine, 60_000)
        runs = 0

        async def handler() -> tuple[int, dict[str, object]]:
            nonlocal runs
            runs += 1
            proxied.lose_reply(b"SET", b'"state": "done"')
            return 200, {"ran": runs}

        body = {"reason": "network_error"}
        assert await keys.run_once("scope", "key-1", body, handler) == (200, {"ran": 1})
        assert proxied.losses.lost == 1
        # The SET landed (only its reply was lost): the same request again is the kept
        # answer, the command not run again.
        assert await keys.run_once("scope", "key-1", body, handler) == (200, {"ran": 1})
        assert runs == 1
    finally:
        await engine.close()
