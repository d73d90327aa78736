"""A session the purge finds kept keeps its index entries (found in a review,
2026-12-07). claim.lua unindexes an ended session whose retention ran out, and
purge.lua then deletes its keys unless it is kept (no expiry: it owes an effect or
awaits review). A session kept so was left in no index: on one node when a save
between the two scripts made it owe a refund (it left the listings), and on Cluster
when a second step arriving late or lost had left it in ``ended`` (its refund was
never claimed). The store now writes its entries back from its record."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import anyio
import pytest

from paylive.core.effects import GatewayEffect
from paylive.core.session import CANCELLED
from paylive.engine.redis import RedisEngine, scripts

from ..engine.test_engine import SETTINGS, T0, make_session, needs_redis
from ..support import redisproc
from ..support.redisproc import RedisProc

pytestmark = [pytest.mark.anyio, pytest.mark.redis, needs_redis]


@pytest.fixture(scope="module")
def purge_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redisproc.RedisClusterProc]:
    cluster = redisproc.start_cluster(tmp_path_factory.mktemp("purgecluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


def _hold_second_step(engine: RedisEngine) -> tuple[asyncio.Event, asyncio.Event]:
    """Make ``engine``'s next save_global.lua wait until released (a slow link to the
    {_global} node, a paused worker)."""
    client = engine._store._client
    original = client.eval
    reached, release = asyncio.Event(), asyncio.Event()

    async def eval_(script: Any, keys: Any, args: Any) -> Any:
        if script is scripts.SAVE_GLOBAL and not release.is_set():
            reached.set()
            await release.wait()
        return await original(script, keys, args)

    client.eval = eval_  # type: ignore[method-assign]
    return reached, release


async def test_out_of_order_second_steps_cannot_lose_a_refund_to_the_purge(
    purge_cluster: redisproc.RedisClusterProc,
) -> None:
    purge_cluster.flushall()
    a = RedisEngine(purge_cluster.url, SETTINGS.redis)
    b = RedisEngine(purge_cluster.url, SETTINGS.redis)
    try:
        await a.start()
        await b.start()
        assert a.cluster and b.cluster
        session = make_session("ps_r4")
        await a.create(session, {}, b"n")

        # Worker A ends the session (nothing owed): its second step would add it to
        # ``ended``, but that step is delayed.
        ended = replace(session, status=CANCELLED, seq=1, updated_at=T0 + 1_000)
        reached, release = _hold_second_step(a)
        a_save = asyncio.ensure_future(a.save(ended, 0, [b"c"], {}))
        with anyio.fail_after(5):
            await reached.wait()

        # Worker B saves the next version: a late success, a refund owed (kept, not
        # flagged for review). Its second step runs first: out of ``ended``.
        current = await b.load("ps_r4")
        assert current is not None and current.version == 1
        refund = GatewayEffect("refund", 1, created_at=T0 + 2_000, next_at=T0 + 2_000)
        owed = replace(current, seq=2, updated_at=T0 + 2_000, effects=(refund,))
        assert await b.save(owed, 1, [b"late"], {})

        # A's delayed step arrives now.
        release.set()
        with anyio.fail_after(5):
            assert await a_save

        # The purge time of version 1 comes: the session owes a refund, so it must
        # stay and its refund must still be claimable.
        purge_at = T0 + 1_000 + SETTINGS.retention_after_end_ms
        await b.claim_due(purge_at, 10, 1_000)
        kept = await b.load("ps_r4")
        assert kept is not None and kept.owes, "the kept session was deleted"
        claimed = await b.claim_effects(purge_at + 10**6, 10, 1_000)
        assert claimed == ["ps_r4"], (
            "a session that owes a refund is no longer in the effects index: "
            "the refund is never tried"
        )
    finally:
        with anyio.fail_after(10):
            await a.close()
            await b.close()


async def test_a_second_step_lost_to_a_timeout_cannot_lose_a_refund_to_the_purge(
    purge_cluster: redisproc.RedisClusterProc,
) -> None:
    """store.py says a second step that fails (EngineUnavailable, or a worker that dies
    between the steps) only lets counters drift and listings lag until the effect's
    first try. But the session stays in ``ended`` with its old purge time, and the
    purge then takes it out of ``effects``: the refund is never tried."""
    from paylive.engine import EngineUnavailable

    purge_cluster.flushall()
    engine = RedisEngine(purge_cluster.url, SETTINGS.redis)
    try:
        await engine.start()
        session = make_session("ps_r4b")
        await engine.create(session, {}, b"n")
        ended = replace(session, status=CANCELLED, seq=1, updated_at=T0 + 1_000)
        assert await engine.save(ended, 0, [b"c"], {})

        client = engine._store._client
        original = client.eval

        async def eval_(script: Any, keys: Any, args: Any) -> Any:
            if script is scripts.SAVE_GLOBAL:
                raise EngineUnavailable("Redis is unavailable: TimeoutError")
            return await original(script, keys, args)

        client.eval = eval_  # type: ignore[method-assign]
        refund = GatewayEffect("refund", 1, created_at=T0 + 2_000, next_at=T0 + 2_000)
        owed = replace(ended, version=1, seq=2, updated_at=T0 + 2_000, effects=(refund,))
        assert await engine.save(owed, 1, [b"late"], {}), "the save itself is stored"
        client.eval = original  # type: ignore[method-assign]

        purge_at = T0 + 1_000 + SETTINGS.retention_after_end_ms
        await engine.claim_due(purge_at, 10, 1_000)
        kept = await engine.load("ps_r4b")
        assert kept is not None and kept.owes
        claimed = await engine.claim_effects(purge_at + 10**6, 10, 1_000)
        assert claimed == ["ps_r4b"], "the kept session's refund is never claimed"
    finally:
        with anyio.fail_after(10):
            await engine.close()


@pytest.fixture(scope="module")
def purge_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    server = redisproc.start_redis(tmp_path_factory.mktemp("purgeredis"))
    yield server
    server.stop()


async def test_a_session_kept_between_claim_and_purge_stays_listed_and_owing(
    purge_redis: RedisProc,
) -> None:
    purge_redis.flushall()
    a = RedisEngine(purge_redis.url, SETTINGS.redis)
    b = RedisEngine(purge_redis.url, SETTINGS.redis)
    try:
        await a.start()
        await b.start()
        session = make_session("ps_race")
        await a.create(session, {}, b"n")
        ended = replace(session, status=CANCELLED, seq=1, updated_at=T0 + 1_000)
        assert await a.save(ended, 0, [b"c"], {})
        assert [s.id for s in await a.list_sessions(False, 10)] == ["ps_race"]

        # Between claim.lua and purge.lua (two scripts, two round trips), worker B
        # saves a late success's refund.
        client = a._store._client
        original = client.eval
        refund = GatewayEffect("refund", 1, created_at=T0 + 2_000, next_at=T0 + 2_000)
        owed = replace(ended, version=1, seq=2, updated_at=T0 + 2_000, effects=(refund,))

        async def eval_(script: Any, keys: Any, args: Any) -> Any:
            if script is scripts.PURGE:
                assert await b.save(owed, 1, [b"late"], {})
            return await original(script, keys, args)

        client.eval = eval_  # type: ignore[method-assign]
        await a.claim_due(T0 + 1_000 + SETTINGS.retention_after_end_ms, 10, 1_000)
        client.eval = original  # type: ignore[method-assign]

        kept = await a.load("ps_race")
        assert kept is not None and kept.owes, "kept: it owes a refund"
        assert await a.claim_effects(T0 + 10**12, 10, 1_000) == ["ps_race"]
        listed = [s.id for s in await a.list_sessions(False, 10)]
        assert listed == ["ps_race"], "a kept session owing a refund is no longer listed"
    finally:
        with anyio.fail_after(10):
            await a.close()
            await b.close()
