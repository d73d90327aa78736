"""The hub's catch-ups after the Redis subscription was lost for a while, against a
real Redis (found in a review, 2026-12-07): a resync whose history read failed once
was never tried again while the subscription stayed healthy, and a resync passed over
a socket still catching up, which then never got what was saved in between."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import anyio
import pytest

from paylive.core.codec import Encoded, Message
from paylive.engine import EngineUnavailable
from paylive.engine.redis import RedisEngine
from paylive.fanout.hub import Hub, Subscriber, snapshot_message

from ..engine.test_engine import FAST_PROBE, T0, eventually, make_session, needs_redis
from ..support import redisproc
from ..support.redisproc import RedisProc

pytestmark = [pytest.mark.anyio, pytest.mark.redis, needs_redis]


@pytest.fixture(scope="module")
def hub_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    server = redisproc.start_redis(tmp_path_factory.mktemp("hubredis"))
    yield server
    server.stop()


async def _no_admin(_resync: bool) -> Encoded:
    raise AssertionError("no admin feed here")


def _event(session_id: str, seq: int) -> bytes:
    return Encoded.of(
        Message("state", {"session": {"status": "created"}}, session_id, seq, T0)
    ).json


class Socket:
    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self.subscriber = Subscriber("customer", "paylive.v1.json", 64, self.send, self.close)

    async def send(self, frame: str | bytes) -> None:
        self.frames.append(json.loads(frame))

    async def close(self, code: int, reason: str) -> None:
        self.frames.append({"type": "closed", "code": code})

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if f["type"] in ("state", "snapshot")]


def _hub_counting_resyncs(engine: RedisEngine) -> tuple[Hub, list[int]]:
    """A hub listening to ``engine``, and how many resyncs it has been told of."""
    hub = Hub(engine, _no_admin, lambda: T0)
    resyncs = [0]

    def counted() -> None:
        resyncs[0] += 1
        hub.on_resync()

    engine.set_listeners(hub.on_event, counted)
    return hub, resyncs


async def _lose_subscription(engine: RedisEngine) -> None:
    """Silence the subscription behind the engine's back (as test_engine does)."""
    conn = engine._subscription.conn
    assert conn is not None
    await conn.send_command("UNSUBSCRIBE")
    await eventually(lambda: not engine.subscription_healthy, timeout=5)


async def test_a_resync_whose_history_read_fails_once_is_tried_again(
    hub_redis: RedisProc,
) -> None:
    """The subscription comes back, the resync's history read meets a transient
    failure (a timeout of the shared connection under load: every command queued on
    it fails at once). The subscription is healthy, so no other resync follows: the
    fill itself is tried again."""
    hub_redis.flushall()
    engine = RedisEngine(hub_redis.url, FAST_PROBE.redis)
    try:
        await engine.start()
        hub, resyncs = _hub_counting_resyncs(engine)
        session = make_session("ps_hub")
        await engine.create(session, {}, b"n")
        sock = Socket()
        await hub.join("ps_hub", sock.subscriber)
        sock.subscriber.begin(0)
        assert await engine.save(replace(session, seq=1), 0, [_event("ps_hub", 1)], {})
        await eventually(lambda: sock.seqs() == [1])

        # The history read of the resync fails once.
        real_history = engine.history
        failures = 0

        async def history(session_id: str, since: int) -> list[bytes] | None:
            nonlocal failures
            if failures == 0:
                failures += 1
                raise EngineUnavailable("Redis is unavailable: TimeoutError")
            return await real_history(session_id, since)

        engine.history = history  # type: ignore[method-assign]

        await _lose_subscription(engine)
        # Saved while the subscription is down: published, but not heard here.
        assert await engine.save(replace(session, seq=2), 1, [_event("ps_hub", 2)], {})
        await eventually(lambda: engine.subscription_healthy and resyncs[0] == 1, timeout=5)
        await eventually(lambda: failures == 1, timeout=2)
        await anyio.sleep(1.5)  # several probe intervals: the subscription stays healthy
        assert engine.subscription_healthy
        assert sock.seqs() == [1, 2], (
            f"seq 2 missed across the reconnect and never replayed (resyncs={resyncs[0]})"
        )
    finally:
        with anyio.fail_after(5):
            await engine.close()


async def test_a_resync_during_a_sockets_catch_up_reaches_it_once_live(
    hub_redis: RedisProc,
) -> None:
    """A socket joins while the subscription is down (``subscribe`` returns at once:
    "the channel is subscribed with all others when the connection is back, and
    on_resync follows"). Its catch-up read (seq 1) was answered before the connection
    was back, and the socket goes live (``begin``) only after the resync has looked
    at the channel: the event saved in between (seq 2), published while nobody
    listened, is replayed to it once it is live."""
    hub_redis.flushall()
    engine = RedisEngine(hub_redis.url, FAST_PROBE.redis)
    try:
        await engine.start()
        hub, resyncs = _hub_counting_resyncs(engine)
        session = make_session("ps_join")
        await engine.create(session, {}, b"n")
        assert await engine.save(replace(session, seq=1), 0, [_event("ps_join", 1)], {})

        await _lose_subscription(engine)
        sock = Socket()
        await hub.join("ps_join", sock.subscriber)  # returns at once: subscription down
        start = await engine.load("ps_join")  # the catch-up's read: seq 1
        assert start is not None and start.seq == 1
        assert await engine.save(replace(start, seq=2), 1, [_event("ps_join", 2)], {})
        await eventually(lambda: engine.subscription_healthy and resyncs[0] == 1, timeout=5)
        await anyio.sleep(0.1)  # the resync's task runs
        # The catch-up ends: snapshot at seq 1, then live (web/sockets.py catch_up).
        sock.subscriber.push(snapshot_message(start, T0))
        assert not sock.subscriber.begin(start.seq)
        await anyio.sleep(1.0)
        assert sock.seqs() == [1, 2], "seq 2 is never delivered to the socket"
    finally:
        with anyio.fail_after(5):
            await engine.close()
