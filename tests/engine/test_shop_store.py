"""Merchant events in the outbox, the events log and delivery records, on both engines
(engine/base.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest

from paylive.core.effects import Delivery
from paylive.core.session import CANCELLED, Session
from paylive.engine import Engine
from paylive.engine.redis import RedisEngine

from ..support import redisproc
from ..support.redisproc import RedisProc
from . import test_engine as suite
from .test_engine import SETTINGS, T0, make_session

pytestmark = pytest.mark.anyio

# The engine suite's fixtures: every test here runs on both engines.
redis_server, make_engine, engine = suite.redis_server, suite.make_engine, suite.engine
redis_engines = suite.redis_engines


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
    # A new log's cursors start from the clock (epoch ms x 1000), not from 1.
    given = await engine.log_append([("e1", T0, b"r1"), ("e2", T0 + 1, b"r2")])
    base = given[0] - 1
    assert T0 * 1000 <= base < 2**53 and given == [base + 1, base + 2]
    # Again (a worker that died before it popped the item): same cursor, same record.
    assert await engine.log_append([("e2", T0 + 5, b"other"), ("e3", T0 + 2, b"r3")]) == [
        base + 2,
        base + 3,
    ]
    assert await engine.log_read(0, 10) == [(base + 1, b"r1"), (base + 2, b"r2"), (base + 3, b"r3")]
    assert await engine.log_read(base + 1, 1) == [(base + 2, b"r2")]
    assert await engine.log_read(base + 3, 10) == []
    assert await engine.log_get("e2") == b"r2" and await engine.log_get("nope") is None
    assert await engine.log_last(base) == base + 3

    # Trimmed by age, but never past the archive's mark.
    assert await engine.log_trim(T0 + 2, base + 1, 100) == 1
    assert await engine.log_first() == base + 2
    assert await engine.log_trim(T0 + 100, base + 3, 100) == 2
    assert await engine.log_read(0, 10) == [] and await engine.log_first() == base + 4
    assert await engine.log_get("e1") is None

    # The archive's mark, when the log is above it, changes nothing.
    await engine.log_seed(base + 3)
    assert await engine.log_append([("e4", T0, b"r4")]) == [base + 4]
    # A mark above the log (the archive took cursors this log lost) moves it past the
    # mark and the clock.
    await engine.log_seed(base + 41)
    [cursor] = await engine.log_append([("e5", T0, b"r5")])
    assert cursor > base + 41
    # A cursor never given is beyond the log (the events API refuses it).
    assert await engine.log_last(2**60) < 2**60


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


async def test_cursors_after_redis_lost_its_log_are_above_every_one_given_before(
    redis_server: RedisProc, redis_engines: Callable[..., Awaitable[RedisEngine]]
) -> None:
    """A Redis restarted empty started its cursors again at 1 (or at the archive's
    mark), and a replica that lost the tail went on from where it stopped: the cursors
    were given again, and a shop that had read up to one of them skipped every new
    event at or below it (found in a review, 2026-12-08)."""

    def counter_at(value: int) -> None:
        redisproc.command(redis_server.port, "SET", "paylive:{_global}:logn", str(value))

    # Cursors given a while ago (a log seeded then): the clock has moved on since.
    past = T0 * 1000
    engine = await redis_engines()
    counter_at(past)
    given = await engine.log_append([(f"e{i}", T0, b"r") for i in range(3)])
    assert given == [past + 1, past + 2, past + 3]
    redis_server.flushall()  # a restart without persistence
    [after_restart] = await engine.log_append([("n1", T0, b"r")])
    assert after_restart > max(given), (given, after_restart)

    # A failover to a replica that lost the tail: the counter is there, behind. The
    # worker that was given a cursor at or above it sees the log went back.
    counter_at(after_restart - 2)
    [own] = await engine.log_append([("n2", T0, b"r")])
    assert own > after_restart

    # A worker that was given none goes on, until a read after the shop's cursor finds
    # the log behind it: from then on the cursors are above the shop's.
    counter_at(past)
    other = await redis_engines()
    assert await other.log_append([("n3", T0, b"r")]) == [past + 1]
    assert await other.log_last(past + 3) > past + 3
    [theirs] = await other.log_append([("n4", T0, b"r")])
    assert theirs > past + 3
