"""Readiness's write probe against real servers: a replica that would take the write
is not writable, on Cluster every primary that owns slots is probed, and a worker asks
Redis at most once per ``PAYLIVE_READY_CACHE_MS`` however often it is asked."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import anyio
import pytest
from redis.crc import key_slot

from paylive.engine.redis import RedisEngine
from paylive.engine.redis.keys import READY
from paylive.service.readiness import WriteProbe
from paylive.settings import Settings

from ..support import redisproc
from ..support.redisproc import RedisProc
from ..support.waiting import until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.redis,
    pytest.mark.skipif(
        redisproc.REDIS_SERVER is None or redisproc.REDIS_CLI is None,
        reason="redis-server and redis-cli are needed",
    ),
]

# Short timeouts: a probe that is not answered fails within a fraction of a second.
SETTINGS = Settings(redis_timeout_ms=500)
CLOSE_TIMEOUT_S = 5.0


def calls(port: int, command: str) -> int:
    """How many times ``command`` ran on the server since its last CONFIG RESETSTAT."""
    stats = redisproc.command(port, "INFO", "commandstats").decode()
    found = re.search(rf"cmdstat_{command}:calls=(\d+)", stats)
    return int(found[1]) if found else 0


def reset_stats(port: int) -> None:
    assert redisproc.command(port, "CONFIG", "RESETSTAT").startswith(b"+OK")


async def make_replica(replica: RedisProc, primary: RedisProc) -> None:
    """``replica`` follows ``primary`` and, as some operators configure one, takes
    writes of its own (``replica-read-only no``): the probe's SET would succeed there."""
    said = redisproc.command(replica.port, "CONFIG", "SET", "replica-read-only", "no")
    assert said.startswith(b"+OK"), said
    said = redisproc.command(replica.port, "REPLICAOF", "127.0.0.1", str(primary.port))
    assert said.startswith(b"+OK"), said

    def linked() -> bool:
        return b"master_link_status:up" in redisproc.command(replica.port, "INFO", "replication")

    await until(linked, timeout=10)
    # The write a worker's save would make: it is taken, and replication will undo it.
    assert redisproc.command(replica.port, "SET", "paylive:probe:x", "1").startswith(b"+OK")


async def test_a_replica_that_takes_writes_is_not_writable(tmp_path: Path) -> None:
    primary = redisproc.start_redis(tmp_path / "primary")
    replica = redisproc.start_redis(tmp_path / "replica")
    engine = RedisEngine(replica.url, SETTINGS.redis)
    try:
        await engine.start()
        assert await engine.writable() is True  # a primary still
        await make_replica(replica, primary)
        reset_stats(replica.port)
        assert await engine.writable() is False
        # Told by its role, not by a write the replica would keep until it resyncs.
        assert calls(replica.port, "set") == 0
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            await engine.close()
        replica.stop()
        primary.stop()


async def test_every_primary_that_owns_slots_is_probed(tmp_path: Path) -> None:
    """A save goes to its session's slot's primary: one of them refusing writes (here
    short of ``min-replicas-to-write``) makes the worker not writable, even when the
    primary of the global slot takes writes."""
    cluster = redisproc.start_cluster(tmp_path / "cluster")
    engine = RedisEngine(cluster.url, SETTINGS.redis)
    try:
        await engine.start()
        for node in cluster.nodes:
            reset_stats(node.port)
        assert await engine.writable() is True
        # One write per primary, each in a slot that primary owns: every node took one.
        assert [calls(node.port, "set") for node in cluster.nodes] == [1, 1, 1]

        # A node that does not own the global slot answers its keys with MOVED.
        others = [
            node
            for node in cluster.nodes
            if redisproc.command(node.port, "GET", READY).startswith(b"-MOVED")
        ]
        assert len(others) == 2, key_slot(READY.encode())
        refusing = others[0]
        said = redisproc.command(refusing.port, "CONFIG", "SET", "min-replicas-to-write", "1")
        assert said.startswith(b"+OK"), said
        assert await engine.writable() is False
        said = redisproc.command(refusing.port, "CONFIG", "SET", "min-replicas-to-write", "0")
        assert said.startswith(b"+OK"), said
        assert await engine.writable() is True
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            await engine.close()
        cluster.stop()


class Clock:
    """A monotonic clock the test moves by hand: the reuse bound without sleeping."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_probes_share_one_write_and_a_refusal_shows_within_the_bound(
    tmp_path: Path,
) -> None:
    primary = redisproc.start_redis(tmp_path / "primary")
    replica = redisproc.start_redis(tmp_path / "replica")
    engine = RedisEngine(replica.url, SETTINGS.redis)
    clock = Clock()
    probe = WriteProbe(engine, reuse_ms=1_000, clock=clock)
    try:
        await engine.start()
        reset_stats(replica.port)
        # Many probes at once (a load balancer and a kubelet, every worker's socket
        # accepting them) share one check in flight: one write.
        answers = await asyncio.gather(*(probe.check() for _ in range(20)))
        assert answers == [True] * 20
        assert calls(replica.port, "set") == 1
        clock.now += 0.999
        assert await probe.check() is True
        assert calls(replica.port, "set") == 1  # reused: no second write

        await make_replica(replica, primary)
        reset_stats(replica.port)
        # Within the bound the last answer stands; once it has passed, Redis is asked.
        assert await probe.check() is True
        clock.now += 0.001
        assert await probe.check() is False
        assert calls(replica.port, "role") == 1
        assert calls(replica.port, "set") == 0

        # Without reuse (0) every probe asks again, yet those at once still share one.
        fresh = WriteProbe(engine, reuse_ms=0, clock=clock)
        assert await asyncio.gather(fresh.check(), fresh.check()) == [False, False]
        assert await fresh.check() is False
        assert calls(replica.port, "role") == 3

        # Redis gone: the engine is unavailable (None), not a raised error.
        replica.stop()
        clock.now += 1
        assert await probe.check() is None
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            await engine.close()
        replica.stop()
        primary.stop()
