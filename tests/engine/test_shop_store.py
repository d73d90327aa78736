"""The merchant outbox, events log and delivery records, on both engines (engine/base.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from paylive.engine import Engine
from paylive.engine.redis import RedisEngine
from paylive.settings import Settings

from ..support import redisproc
from . import test_engine as suite
from .test_engine import SETTINGS, T0, make_session, needs_redis

pytestmark = pytest.mark.anyio

# The engine suite's fixtures: every test here runs on both engines.
redis_server, make_engine, engine = suite.redis_server, suite.make_engine, suite.engine


async def test_outbox_items_are_saved_with_the_decision_and_only_with_it(engine: Engine) -> None:
    session = make_session("ps_o")
    await engine.create(session, {}, b"n")
    assert await engine.outbox_claim(T0, 10, 1000) == []
    # A lost race stores none of its items.
    assert await engine.save(replace(session, seq=1), 5, [b"e"], {}, outbox=[b"lost"]) is False
    assert await engine.outbox_pending() == 0
    assert await engine.save(replace(session, seq=1), 0, [b"e1"], {}, outbox=[b"a", b"b"])
    assert await engine.save(replace(session, seq=2), 1, [b"e2"], {}, outbox=[b"c"])
    assert await engine.outbox_pending() == 1

    assert await engine.outbox_claim(T0, 10, 1000) == ["ps_o"]
    # Leased: nobody else gets it until the lease ends.
    assert await engine.outbox_claim(T0 + 999, 10, 1000) == []
    assert await engine.outbox_head("ps_o", 10) == [b"a", b"b", b"c"]
    assert await engine.outbox_pop("ps_o", b"b") is False  # not the head: nothing popped
    assert await engine.outbox_pop("ps_o", b"a") is True
    assert await engine.outbox_pop("ps_o", b"a") is False
    assert await engine.outbox_head("ps_o", 1) == [b"b"]

    # A failed delivery makes it due later; the lease ran out meanwhile.
    await engine.outbox_later("ps_o", T0 + 5000)
    assert await engine.outbox_claim(T0 + 4999, 10, 1000) == []
    assert await engine.outbox_claim(T0 + 5000, 10, 1000) == ["ps_o"]
    assert await engine.outbox_pop("ps_o", b"b") and await engine.outbox_pop("ps_o", b"c")
    assert await engine.outbox_pending() == 0
    assert await engine.outbox_claim(T0 + 99_999, 10, 1000) == []

    # "Send again" pushes outside a save.
    await engine.outbox_push("ps_o", [b"again"])
    assert await engine.outbox_claim(T0, 10, 1000) == ["ps_o"]
    assert await engine.outbox_head("ps_o", 5) == [b"again"]


async def test_outbox_outlives_the_session(make_engine: object) -> None:
    short = replace(SETTINGS, retention_after_end_ms=1)
    store = await make_engine(short)  # type: ignore[operator]
    session = make_session("ps_gone")
    await store.create(session, {}, b"n")
    ended = replace(session, status="cancelled", seq=1, updated_at=T0)
    assert await store.save(ended, 0, [b"e"], {}, outbox=[b"x"])
    await store.claim_due(T0 + 10_000_000_000, 10, 1000)  # purges ended sessions
    assert await store.load("ps_gone") is None
    assert await store.outbox_head("ps_gone", 5) == [b"x"]


async def test_log_appends_once_per_id_and_reads_in_order(engine: Engine) -> None:
    assert await engine.log_first() == 1
    assert await engine.log_append([("e1", T0, b"r1"), ("e2", T0 + 1, b"r2")]) == [1, 2]
    # Again (a worker that died before it popped the item): same cursor, same record.
    assert await engine.log_append([("e2", T0 + 5, b"other"), ("e3", T0 + 2, b"r3")]) == [2, 3]
    assert await engine.log_read(0, 10) == [(1, b"r1"), (2, b"r2"), (3, b"r3")]
    assert await engine.log_read(1, 1) == [(2, b"r2")]
    assert await engine.log_read(3, 10) == []
    assert await engine.log_get("e2") == b"r2" and await engine.log_get("nope") is None

    # Trimmed by age, but never past the archive's mark.
    assert await engine.log_trim(T0 + 2, 1, 100) == 1
    assert await engine.log_first() == 2
    assert await engine.log_trim(T0 + 100, 3, 100) == 2
    assert await engine.log_read(0, 10) == [] and await engine.log_first() == 4
    assert await engine.log_get("e1") is None

    # A wiped log under an archive that holds cursors up to 41 starts above them.
    await engine.log_seed(41)
    assert await engine.log_append([("e4", T0, b"r4")]) == [42]
    await engine.log_seed(10)
    assert await engine.log_append([("e5", T0, b"r5")]) == [43]


async def test_deliveries_keep_open_ones_and_the_newest_done(make_engine: object) -> None:
    store = await make_engine(replace(SETTINGS, deliveries_kept=2))  # type: ignore[operator]
    await store.delivery_put("a", b"A-pending", True, 1)
    for i, name in enumerate(["b", "c", "d"]):
        await store.delivery_put(name, name.encode(), False, 10 + i)
    assert await store.deliveries(False, 10) == [b"d", b"c", b"A-pending"]
    assert await store.delivery_get("b") is None  # past the cap
    await store.delivery_put("a", b"A-failed", True, 20)
    assert await store.deliveries(True, 10) == [b"A-failed"]
    await store.delivery_put("a", b"A-done", False, 30)
    assert await store.deliveries(True, 10) == []
    assert await store.deliveries(False, 10) == [b"A-done", b"d"]
    assert await store.deliveries(False, 1) == [b"A-done"]


@needs_redis
async def test_cluster_outbox(tmp_path: Path) -> None:
    cluster = redisproc.start_cluster(tmp_path / "cluster")
    node = RedisEngine(cluster.url, Settings())
    try:
        await node.start()
        assert node.cluster
        session = make_session("ps_c")
        await node.create(session, {}, b"n")
        assert await node.save(replace(session, seq=1), 0, [b"e"], {}, outbox=[b"x", b"y"])
        assert await node.outbox_claim(T0, 10, 1000) == ["ps_c"]
        assert await node.outbox_pop("ps_c", b"x") and await node.outbox_pop("ps_c", b"y")
        assert await node.outbox_pending() == 0
        assert await node.log_append([("e1", T0, b"r")]) == [1]
        assert await node.log_read(0, 5) == [(1, b"r")]
    finally:
        await node.close()
        cluster.stop()
