"""Merchant events in the outbox, the events log and delivery records, on both engines
(engine/base.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from paylive.core.effects import Delivery
from paylive.core.session import CANCELLED, Session
from paylive.engine import Engine

from . import test_engine as suite
from .test_engine import SETTINGS, T0, make_session

pytestmark = pytest.mark.anyio

# The engine suite's fixtures: every test here runs on both engines.
redis_server, make_engine, engine = suite.redis_server, suite.make_engine, suite.engine


def owing(session: Session, seq: int, at: int) -> Session:
    """``session`` ended, owing the shop its ``session.cancelled``."""
    event = {"id": f"evt_{seq}", "type": "session.cancelled", "seq": seq, "created": at}
    event["session"] = {"id": session.id}
    owed = Delivery(event, since=at, next_at=at)
    return replace(session, status=CANCELLED, seq=seq, updated_at=at, deliveries=(owed,))


async def test_merchant_events_are_outbox_items_kept_until_delivered(make_engine: object) -> None:
    short = replace(SETTINGS, retention_after_end_ms=1_000)
    engine = await make_engine(short)  # type: ignore[operator]
    session = make_session("ps_o")
    await engine.create(session, {}, b"n")
    # A lost race stores none of them.
    assert await engine.save(owing(session, 1, T0 + 100), 5, [b"e"], {}) is False
    owed = owing(session, 1, T0 + 100)
    assert await engine.save(owed, 0, [b"e"], {"deliveries_pending": 1})
    assert await engine.load("ps_o") == replace(owed, version=1)
    # Claimed like an effect, once per lease; not a pending effect for the listings.
    assert await engine.claim_effects(T0 + 99, 10, 5_000) == []
    assert await engine.claim_effects(T0 + 100, 10, 5_000) == ["ps_o"]
    assert await engine.claim_effects(T0 + 100, 10, 5_000) == []
    assert await engine.list_with_effects(True, 10) == []
    assert await engine.oldest_pending_effect() is None
    # Owed long after its retention: neither purged nor expired.
    await engine.claim_due(T0 + 10**8, 10, 1_000)
    assert await engine.load("ps_o") is not None
    # Delivered: kept for its retention from then, then purged.
    delivered = replace(owed, deliveries=())
    assert await engine.save(delivered, 1, [], {"deliveries_pending": -1})
    assert await engine.claim_effects(T0 + 10**9, 10, 5_000) == []
    await engine.claim_due(T0 + 10**9, 10, 1_000)
    assert await engine.load("ps_o") is None
    assert await engine.counters() == {"deliveries_pending": 0}


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
