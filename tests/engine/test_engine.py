"""One suite for both engines, plus what only Redis can do (several engines, outages,
restarts, Cluster). Redis tests start their own redis-server on a free port."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from redis.crc import key_slot
from redis.exceptions import ResponseError

from paylive.core.effects import Delivery, GatewayEffect
from paylive.core.session import CANCELLED, CREATED, PROCESSING, SUCCEEDED, Session
from paylive.engine import AuditAdd, Claim, Engine, EngineUnavailable, RecordClaim
from paylive.engine.memory import MemoryEngine
from paylive.engine.redis import RedisEngine
from paylive.engine.redis.keys import REVIEW
from paylive.settings import Settings

from ..support import redisproc
from ..support.redisproc import RedisProc

pytestmark = pytest.mark.anyio

needs_redis = pytest.mark.skipif(
    redisproc.REDIS_SERVER is None or redisproc.REDIS_CLI is None,
    reason="redis-server and redis-cli are needed",
)

T0 = 1_764_000_000_000
SETTINGS = Settings(history_cap=5)
# A subscription checked often and rebuilt soon, so that outages show within a second.
FAST_PROBE = replace(
    SETTINGS, redis_probe_interval_ms=300, redis_probe_timeout_ms=500, redis_backoff_cap_ms=500
)
CLOSE_TIMEOUT_S = 5.0


def make_session(session_id: str, created_at: int = T0, **changes: Any) -> Session:
    session = Session(
        id=session_id,
        order_id=f"order-{session_id}",
        amount=1999,
        currency="EUR",
        created_at=created_at,
        expires_at=created_at + SETTINGS.session_ttl_ms,
        max_attempts=3,
        updated_at=created_at,
        metadata={"cart": "ünïcode"},
    )
    return replace(session, **changes)


class Recorder:
    """The listeners an engine calls: what arrived on which channel, and resyncs."""

    def __init__(self, engine: Engine) -> None:
        self.events: list[tuple[str | None, bytes]] = []
        self.resyncs = 0
        engine.set_listeners(self.on_event, self.on_resync)

    def on_event(self, session_id: str | None, payload: bytes) -> None:
        assert isinstance(payload, bytes)
        self.events.append((session_id, payload))

    def on_resync(self) -> None:
        self.resyncs += 1

    def of(self, session_id: str | None) -> list[bytes]:
        return [payload for sid, payload in self.events if sid == session_id]


async def eventually(check: Callable[[], bool], timeout: float = 3.0) -> None:
    """Wait until ``check()`` holds; bounded by ``timeout``."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await anyio.sleep(0.01)


# Fixtures -------------------------------------------------------------------

MakeEngine = Callable[..., Awaitable[Engine]]


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    if redisproc.REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH")
    server = redisproc.start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis", marks=[pytest.mark.redis, needs_redis]),
    ]
)
async def make_engine(request: pytest.FixtureRequest) -> AsyncIterator[MakeEngine]:
    """Make started engines of the parametrised kind; all closed at teardown."""
    server: RedisProc | None = None
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flushall()
    made: list[Engine] = []

    async def make(settings: Settings = SETTINGS) -> Engine:
        engine: Engine
        if server is None:
            engine = MemoryEngine(settings.engine)
        else:
            engine = RedisEngine(server.url, settings.redis)
        made.append(engine)
        await engine.start()
        return engine

    yield make
    with anyio.fail_after(CLOSE_TIMEOUT_S):
        for engine in made:
            await engine.close()


@pytest.fixture
async def engine(make_engine: MakeEngine) -> Engine:
    return await make_engine()


@pytest.fixture
async def redis_engines(
    redis_server: RedisProc,
) -> AsyncIterator[Callable[..., Awaitable[RedisEngine]]]:
    """Make Redis engines on the module's server (or another URL); closed at teardown."""
    redis_server.flushall()
    made: list[RedisEngine] = []

    async def make(url: str | None = None, **limits: Any) -> RedisEngine:
        engine = RedisEngine(url or redis_server.url, replace(SETTINGS, **limits).redis)
        made.append(engine)
        await engine.start()
        return engine

    yield make
    with anyio.fail_after(CLOSE_TIMEOUT_S):
        for engine in made:
            await engine.close()


# Both engines ---------------------------------------------------------------


async def test_create_and_load(engine: Engine) -> None:
    session = make_session("ps_a")
    await engine.create(session, {"status:created": 1}, b"notice")
    assert await engine.load("ps_a") == session
    assert await engine.load("ps_missing") is None
    assert await engine.counters() == {"status:created": 1}


async def test_a_create_never_overwrites_a_session(engine: Engine) -> None:
    # A keyed create names its session after the request: a create still on its way
    # (its reply was lost, the retry made the session) must not replace the session
    # the retry made and the customer has paid on since.
    await engine.subscribe(None)
    rec = Recorder(engine)
    session = make_session("ps_a")
    assert await engine.create(session, {"status:created": 1}, b"notice") is True
    paying = replace(session, status=PROCESSING, attempt=1, deadline=T0 + 30_000, seq=1)
    moved = {"status:created": -1, "status:processing": 1}
    assert await engine.save(paying, 0, [b"e1"], moved) is True

    assert await engine.create(session, {"status:created": 1}, b"again") is False
    assert await engine.load("ps_a") == replace(paying, version=1)
    assert await engine.history("ps_a", 0) == [b"e1"]
    assert await engine.counters() == {"status:created": 0, "status:processing": 1}
    assert [s.id for s in await engine.list_sessions(False, 10)] == ["ps_a"]
    await eventually(lambda: rec.of(None)[-1:] == [b"e1"])
    assert b"again" not in rec.of(None)


async def test_save_is_compare_and_set(engine: Engine) -> None:
    rec = Recorder(engine)
    await engine.subscribe("ps_a")
    await engine.subscribe(None)
    session = make_session("ps_a")
    await engine.create(session, {"status:created": 1}, b"notice")

    paying = replace(session, status=PROCESSING, attempt=1, deadline=T0 + 30_000, seq=1)
    moved = {"status:created": -1, "status:processing": 1}
    assert await engine.save(paying, 0, [b"e1"], moved) is True
    assert await engine.load("ps_a") == replace(paying, version=1)

    # A writer that loaded version 0 lost the race: it changes nothing at all.
    stale = replace(session, status=CANCELLED, seq=1)
    assert await engine.save(stale, 0, [b"stale"], {"status:cancelled": 1}) is False
    assert await engine.load("ps_a") == replace(paying, version=1)
    assert await engine.history("ps_a", 0) == [b"e1"]
    assert await engine.counters() == {"status:created": 0, "status:processing": 1}

    # Events of one engine arrive in order on one connection: once e2 is in, a
    # published "stale" event would have been seen already.
    assert await engine.save(replace(paying, seq=2), 1, [b"e2"], {}) is True
    await eventually(lambda: rec.of(None)[-1:] == [b"e2"])
    assert rec.of("ps_a") == [b"e1", b"e2"]
    assert rec.of(None) == [b"notice", b"e1", b"e2"]

    assert await engine.save(make_session("ps_unknown"), 0, [b"x"], {}) is False
    assert await engine.load("ps_unknown") is None


async def test_events_go_to_history_and_both_channels(engine: Engine) -> None:
    rec = Recorder(engine)
    await engine.subscribe("ps_a")
    await engine.subscribe(None)
    await engine.create(make_session("ps_a"), {}, b"created-a")
    await engine.create(make_session("ps_b"), {}, b"created-b")
    session = await engine.load("ps_a")
    assert session is not None
    assert await engine.save(replace(session, seq=2), 0, [b"s1", b"s2"], {}) is True
    other = await engine.load("ps_b")
    assert other is not None
    assert await engine.save(replace(other, seq=1), 0, [b"b1"], {}) is True

    await eventually(lambda: len(rec.of(None)) == 5)
    # The notice of a creation goes to the admin channel only.
    assert rec.of("ps_a") == [b"s1", b"s2"]
    assert rec.of("ps_b") == []  # not subscribed
    assert rec.of(None) == [b"created-a", b"created-b", b"s1", b"s2", b"b1"]
    assert await engine.history("ps_a", 0) == [b"s1", b"s2"]
    assert await engine.history("ps_b", 0) == [b"b1"]


async def test_history_replays_after_since_or_says_it_cannot(engine: Engine) -> None:
    session = make_session("ps_h")
    await engine.create(session, {}, b"n")
    for seq in range(1, 4):
        saved = await engine.save(replace(session, seq=seq), seq - 1, [b"e%d" % seq], {})
        assert saved
    assert await engine.history("ps_h", 0) == [b"e1", b"e2", b"e3"]
    assert await engine.history("ps_h", 1) == [b"e2", b"e3"]
    assert await engine.history("ps_h", 3) == []
    assert await engine.history("ps_h", 9) == []

    # Five more in one save: 8 in all, the cap (5) holds e4..e8.
    events = [b"e%d" % seq for seq in range(4, 9)]
    assert await engine.save(replace(session, seq=8), 3, events, {})
    assert await engine.history("ps_h", 3) == events
    assert await engine.history("ps_h", 6) == [b"e7", b"e8"]
    assert await engine.history("ps_h", 2) is None  # e3 is gone: no partial replay
    assert await engine.history("ps_h", 0) is None
    assert await engine.history("ps_missing", 0) is None


async def test_list_sessions_newest_first(engine: Engine) -> None:
    # a, b and c in the same millisecond: creation order still decides.
    for session_id in ("ps_a", "ps_b", "ps_c"):
        await engine.create(make_session(session_id), {}, b"n")
    await engine.create(make_session("ps_d", created_at=T0 + 5), {}, b"n")

    def ids(sessions: list[Session]) -> list[str]:
        return [s.id for s in sessions]

    assert ids(await engine.list_sessions(False, 10)) == ["ps_d", "ps_c", "ps_b", "ps_a"]
    assert ids(await engine.list_sessions(False, 2)) == ["ps_d", "ps_c"]
    assert await engine.list_sessions(False, 0) == []

    b = await engine.load("ps_b")
    assert b is not None
    assert await engine.save(replace(b, status=SUCCEEDED, seq=1), 0, [b"done"], {})
    assert ids(await engine.list_sessions(True, 10)) == ["ps_d", "ps_c", "ps_a"]
    assert ids(await engine.list_sessions(True, 1)) == ["ps_d"]
    listed = await engine.list_sessions(False, 10)
    assert ids(listed) == ["ps_d", "ps_c", "ps_b", "ps_a"]
    assert listed[2].status == SUCCEEDED and listed[2].version == 1


async def test_counters_add_the_deltas(engine: Engine) -> None:
    assert await engine.counters() == {}
    for session_id in ("ps_a", "ps_b"):
        await engine.create(make_session(session_id), {"status:created": 1}, b"n")
    a = await engine.load("ps_a")
    assert a is not None
    delta = {"status:created": -1, "status:cancelled": 1, "interruptions:timeout": 2}
    assert await engine.save(replace(a, status=CANCELLED, seq=1), 0, [b"x"], delta)
    assert await engine.counters() == {
        "status:created": 1,
        "status:cancelled": 1,
        "interruptions:timeout": 2,
    }


async def test_timers_are_claimed_once_per_lease(engine: Engine) -> None:
    session = make_session("ps_t")
    await engine.create(session, {}, b"n")
    due = session.expires_at  # a created session is looked at when it expires
    assert await engine.claim_due(due - 1, 10, 5_000) == []
    assert await engine.claim_due(due, 10, 5_000) == ["ps_t"]
    # Leased: nobody else gets it until the lease runs out (the worker died).
    assert await engine.claim_due(due, 10, 5_000) == []
    assert await engine.claim_due(due + 4_999, 10, 5_000) == []
    assert await engine.claim_due(due + 5_000, 10, 5_000) == ["ps_t"]

    # A save sets the timer to the new state's next_due (here: earlier).
    paying = replace(session, status=PROCESSING, attempt=1, deadline=T0 + 30_000, seq=1)
    assert await engine.save(paying, 0, [b"p"], {})
    assert await engine.claim_due(T0 + 29_999, 10, 5_000) == []
    assert await engine.claim_due(T0 + 30_000, 10, 5_000) == ["ps_t"]

    # ...or later, past the lease the claim set.
    waiting = replace(paying, status=CREATED, deadline=None, seq=2)
    assert await engine.save(waiting, 1, [b"w"], {})
    assert await engine.claim_due(T0 + 40_000, 10, 5_000) == []
    assert await engine.claim_due(session.expires_at, 10, 5_000) == ["ps_t"]

    # A terminal session has no timer.
    done = replace(waiting, status=CANCELLED, seq=3)
    assert await engine.save(done, 2, [b"c"], {})
    assert await engine.claim_due(session.expires_at + 10**6, 10, 5_000) == []


async def test_schedule_and_claim_limit(engine: Engine) -> None:
    for index, session_id in enumerate(("ps_a", "ps_b", "ps_c")):
        await engine.create(make_session(session_id, created_at=T0 + index), {}, b"n")
    await engine.schedule("ps_c", T0 + 10)
    await engine.schedule("ps_a", T0 + 30)
    await engine.schedule("ps_b", None)
    await engine.schedule("ps_ghost", T0)  # no such session: nothing happens

    assert await engine.claim_due(T0 + 5, 10, 1_000) == []
    assert await engine.claim_due(T0 + 40, 1, 1_000) == ["ps_c"]  # earliest due first
    assert await engine.claim_due(T0 + 40, 5, 1_000) == ["ps_a"]
    assert await engine.claim_due(T0 + 40, 0, 1_000) == []
    # ps_b has no timer any more, and the two leases run out at T0 + 1040.
    assert sorted(await engine.claim_due(T0 + 1_040, 10, 1_000)) == ["ps_a", "ps_c"]


async def test_ended_sessions_are_purged_after_retention(engine: Engine) -> None:
    session = make_session("ps_old")
    await engine.create(session, {}, b"n")
    ended_at = T0 + 1_000
    done = replace(session, status=CANCELLED, seq=1, updated_at=ended_at)
    assert await engine.save(done, 0, [b"c"], {})
    purge_at = ended_at + SETTINGS.retention_after_end_ms
    await engine.claim_due(purge_at - 1, 10, 1_000)
    assert await engine.load("ps_old") is not None
    await engine.claim_due(purge_at, 10, 1_000)
    assert await engine.load("ps_old") is None
    assert await engine.history("ps_old", 0) is None
    assert await engine.list_sessions(False, 10) == []


def with_refund(session: Session, seq: int, decided_at: int, **changes: Any) -> Session:
    """``session`` ended, with a refund of attempt 1 pending in its outbox."""
    refund = GatewayEffect("refund", 1, created_at=decided_at, next_at=decided_at)
    return replace(
        session,
        status=CANCELLED,
        seq=seq,
        updated_at=decided_at,
        needs_review=True,
        effects=(refund,),
        **changes,
    )


async def test_the_outbox_is_saved_with_the_session_and_claimed_once_per_lease(
    engine: Engine,
) -> None:
    session = make_session("ps_fx")
    await engine.create(session, {}, b"n")
    assert await engine.claim_effects(T0 + 10**9, 10, 5_000) == []
    owed = with_refund(session, 1, T0 + 100)
    assert await engine.save(owed, 0, [b"late"], {"effects_pending:refund": 1})
    assert await engine.load("ps_fx") == replace(owed, version=1)
    assert await engine.claim_due(T0 + 10**9, 10, 5_000) == [], "no timer: the session ended"
    assert await engine.claim_effects(T0 + 99, 10, 5_000) == []
    assert await engine.claim_effects(T0 + 100, 10, 5_000) == ["ps_fx"]
    # Leased: nobody else gets it until the lease runs out (the worker died).
    assert await engine.claim_effects(T0 + 100, 10, 5_000) == []
    assert await engine.claim_effects(T0 + 5_100, 10, 5_000) == ["ps_fx"]
    # A failed try saved: due at its backoff, whatever the lease said.
    tried = replace(owed, effects=(replace(owed.effects[0], tries=1, next_at=T0 + 5_600),))
    assert await engine.save(tried, 1, [], {})
    assert await engine.claim_effects(T0 + 5_599, 10, 5_000) == []
    assert await engine.claim_effects(T0 + 5_600, 10, 5_000) == ["ps_fx"]
    # Done: never due again.
    done_effect = replace(tried.effects[0], status="done", next_at=None, done_at=T0 + 6_000)
    done = replace(tried, seq=2, effects=(done_effect,))
    assert await engine.save(done, 2, [b"done"], {"effects_pending:refund": -1})
    assert await engine.claim_effects(T0 + 10**9, 10, 5_000) == []
    assert await engine.counters() == {"effects_pending:refund": 0, "needs_review": 1}


async def test_schedule_effects_sets_right_an_early_claim(engine: Engine) -> None:
    session = make_session("ps_fx")
    await engine.create(session, {}, b"n")
    assert await engine.save(with_refund(session, 1, T0 + 100), 0, [b"e"], {})
    assert await engine.claim_effects(T0 + 100, 10, 60_000) == ["ps_fx"]
    await engine.schedule_effects("ps_fx", T0 + 200)
    await engine.schedule_effects("ps_ghost", T0)  # no such session: nothing happens
    assert await engine.claim_effects(T0 + 200, 10, 60_000) == ["ps_fx"]
    await engine.schedule_effects("ps_fx", None)
    assert await engine.claim_effects(T0 + 10**9, 10, 60_000) == []


async def test_reviews_and_outboxes_are_listed(engine: Engine) -> None:
    for index, session_id in enumerate(("ps_a", "ps_b", "ps_c")):
        await engine.create(make_session(session_id, created_at=T0 + index), {}, b"n")
    a = await engine.load("ps_a")
    c = await engine.load("ps_c")
    assert a is not None and c is not None
    assert await engine.save(with_refund(c, 1, T0 + 100), 0, [b"e"], {})
    assert await engine.save(with_refund(a, 1, T0 + 200), 0, [b"e"], {})
    assert [s.id for s in await engine.list_review(10)] == ["ps_a", "ps_c"]
    assert [s.id for s in await engine.list_review(1)] == ["ps_a"]
    assert [s.id for s in await engine.list_with_effects(True, 10)] == ["ps_a", "ps_c"]
    assert await engine.oldest_pending_effect() == T0 + 100
    # c's refund is confirmed and its review resolved: it leaves both lists, but its
    # outbox is still listed among all outboxes.
    c1 = await engine.load("ps_c")
    assert c1 is not None
    done_effect = replace(c1.effects[0], status="done", next_at=None, done_at=T0 + 300)
    resolved = replace(c1, seq=2, needs_review=False, effects=(done_effect,))
    assert await engine.save(resolved, 1, [b"r"], {})
    assert [s.id for s in await engine.list_review(10)] == ["ps_a"]
    assert [s.id for s in await engine.list_with_effects(True, 10)] == ["ps_a"]
    assert [s.id for s in await engine.list_with_effects(False, 10)] == ["ps_a", "ps_c"]
    assert await engine.oldest_pending_effect() == T0 + 200
    assert await engine.list_review(0) == []


async def test_an_ended_session_is_kept_while_its_outbox_owes_a_call(engine: Engine) -> None:
    session = make_session("ps_owed")
    await engine.create(session, {}, b"n")
    ended_at = T0 + 1_000
    assert await engine.save(with_refund(session, 1, ended_at), 0, [b"c"], {})
    purge_at = ended_at + SETTINGS.retention_after_end_ms
    await engine.claim_due(purge_at + 1, 10, 1_000)
    owed = await engine.load("ps_owed")
    assert owed is not None, "kept: the refund has not reached the provider"
    done_effect = replace(owed.effects[0], status="done", next_at=None, done_at=purge_at + 2)
    # Confirmed, and its review resolved at once (kept for review otherwise: below).
    done = replace(owed, seq=2, updated_at=purge_at + 2, needs_review=False, effects=(done_effect,))
    assert await engine.save(done, 1, [b"d"], {})
    await engine.claim_due(purge_at + 2 + SETTINGS.retention_after_end_ms, 10, 1_000)
    assert await engine.load("ps_owed") is None
    assert await engine.list_with_effects(False, 10) == []
    assert await engine.list_review(10) == []


async def test_a_case_for_review_is_kept_listed_and_counted_until_it_is_resolved(
    engine: Engine,
) -> None:
    """Its refund confirmed and its retention long past, a flagged session stays in
    the review list, loadable (so resolvable) and counted; resolving it lowers the
    counter and starts its retention."""
    session = make_session("ps_case")
    await engine.create(session, {}, b"n")
    ended_at = T0 + 1_000
    assert await engine.save(with_refund(session, 1, ended_at), 0, [b"c"], {"needs_review": 1})
    owed = await engine.load("ps_case")
    assert owed is not None
    done_effect = replace(owed.effects[0], status="done", next_at=None, done_at=ended_at + 10)
    confirmed = replace(owed, seq=2, updated_at=ended_at + 10, effects=(done_effect,))
    assert await engine.save(confirmed, 1, [b"d"], {})
    later = ended_at + 10 * SETTINGS.retention_after_end_ms
    await engine.claim_due(later, 10, 1_000)
    assert await engine.load("ps_case") is not None, "purged before anyone resolved it"
    assert [s.id for s in await engine.list_review(10)] == ["ps_case"]
    assert (await engine.counters())["needs_review"] == 1
    resolved = replace(confirmed, seq=3, updated_at=later, needs_review=False)
    assert await engine.save(resolved, 2, [b"r"], {"needs_review": -1})
    assert await engine.list_review(10) == []
    assert (await engine.counters()).get("needs_review", 0) == 0
    await engine.claim_due(later + SETTINGS.retention_after_end_ms - 1, 10, 1_000)
    assert await engine.load("ps_case") is not None, "its retention starts when resolved"
    await engine.claim_due(later + SETTINGS.retention_after_end_ms, 10, 1_000)
    assert await engine.load("ps_case") is None


async def test_the_review_counter_is_what_the_review_list_holds(engine: Engine) -> None:
    """A counter that drifted (a purge of old, a crash between two steps) does not
    show: the count comes from the list."""
    session = make_session("ps_drift")
    await engine.create(session, {}, b"n")
    assert await engine.save(with_refund(session, 1, T0 + 5), 0, [b"c"], {"needs_review": 7})
    assert (await engine.counters())["needs_review"] == 1


async def test_records(engine: Engine) -> None:
    assert await engine.put_if_absent("idem:1", b"first", 10_000) is None
    assert await engine.put_if_absent("idem:1", b"second", 10_000) == b"first"
    assert await engine.get("idem:1") == b"first"
    await engine.put("idem:1", b"third", 10_000)
    assert await engine.get("idem:1") == b"third"
    await engine.delete("idem:1")
    assert await engine.get("idem:1") is None
    await engine.delete("idem:1")  # deleting nothing is fine
    assert await engine.get("never") is None

    await engine.put("short", b"x", 100)
    assert await engine.put_if_absent("short-nx", b"y", 100) is None
    assert await engine.get("short") == b"x"
    await anyio.sleep(0.3)
    assert await engine.get("short") is None
    assert await engine.put_if_absent("short-nx", b"z", 10_000) is None
    assert await engine.get("short-nx") == b"z"


async def test_claim_is_one_decision(engine: Engine) -> None:
    # Stored, with its companion.
    got = await engine.claim("c:1", b"v1", 10_000, unless="c:off", also=("c:log", b"l1"))
    assert got == Claim() and await engine.get("c:1") == b"v1"
    assert await engine.get("c:log") == b"l1"
    # Held: nothing changes, the companion included.
    got = await engine.claim("c:1", b"v2", 10_000, unless="c:off", also=("c:log", b"l2"))
    assert got == Claim(held=b"v1")
    assert await engine.get("c:1") == b"v1" and await engine.get("c:log") == b"l1"
    # A companion already held is kept as it was.
    await engine.put("c:log2", b"old", 10_000)
    assert await engine.claim("c:2", b"v", 10_000, also=("c:log2", b"new")) == Claim()
    assert await engine.get("c:log2") == b"old"
    # Blocked: nothing stored at all.
    await engine.put("c:off", b"1", 10_000)
    got = await engine.claim("c:3", b"v3", 10_000, unless="c:off", also=("c:log3", b"l3"))
    assert got == Claim(blocked=True)
    assert await engine.get("c:3") is None and await engine.get("c:log3") is None
    # No blocker named: the blocker key is not looked at.
    assert await engine.claim("c:3", b"v3", 10_000) == Claim()


@needs_redis
async def test_claim_is_one_round_trip_on_one_node(redis_server: RedisProc) -> None:
    engine = _counted_engine(redis_server, 5)
    await engine.start()
    try:
        await engine.claim("rt:warm", b"v", 10_000, unless="rt:off")  # loads the script
        trips = RoundTrips(redis_server)
        got = await engine.claim("rt:1", b"v", 10_000, unless="rt:off", also=("rt:l", b"l"))
        spent = trips.spent()
    finally:
        await engine.close()
    assert got == Claim() and spent == 1


async def test_claims_made_with_a_save_answer_as_the_claim_would(engine: Engine) -> None:
    session = make_session("ps_claims")
    await engine.create(session, {}, b"n")
    ask = RecordClaim("sc:1", b"v1", 10_000, unless="sc:off")
    # A save that loses its compare-and-set claims nothing.
    assert await engine.save(replace(session, seq=1), 7, [b"x"], {}, [ask]) is False
    assert await engine.get("sc:1") is None
    assert await engine.save(replace(session, seq=1), 0, [b"e1"], {}, [ask]) is True
    assert await engine.claim(ask.key, ask.value, ask.ttl_ms, unless=ask.unless) == Claim()
    assert await engine.get("sc:1") == b"v1"
    # Asked again: held, whether or not the engine answered the first from the save.
    assert await engine.claim(ask.key, b"v2", 10_000, unless="sc:off") == Claim(held=b"v1")
    # Blocked at the save: nothing stored, and the claim says so.
    await engine.put("sc:off", b"1", 10_000)
    blocked = RecordClaim("sc:2", b"v", 10_000, unless="sc:off")
    assert await engine.save(replace(session, seq=2), 1, [b"e2"], {}, [blocked]) is True
    assert await engine.claim("sc:2", b"v", 10_000, unless="sc:off") == Claim(blocked=True)
    assert await engine.get("sc:2") is None


@needs_redis
async def test_a_save_and_its_charge_claim_are_one_round_trip_on_one_node(
    redis_server: RedisProc,
) -> None:
    engine = _counted_engine(redis_server, 6)
    await engine.start()
    try:
        session = make_session("ps_rt")
        await engine.create(session, {}, b"n")
        warm = RecordClaim("rt:warm", b"v", 10_000, unless="rt:off")
        assert await engine.save(replace(session, seq=1), 0, [b"e1"], {}, [warm])
        trips = RoundTrips(redis_server)
        ask = RecordClaim("rt:2", b"v", 10_000, unless="rt:off")
        assert await engine.save(replace(session, seq=2), 1, [b"e2"], {}, [ask])
        got = await engine.claim(ask.key, ask.value, ask.ttl_ms, unless=ask.unless)
        spent = trips.spent()
    finally:
        await engine.close()
    assert got == Claim() and spent == 1


@needs_redis
async def test_a_save_and_its_audit_entry_are_one_round_trip_on_one_node(
    redis_server: RedisProc,
) -> None:
    engine = _counted_engine(redis_server, 9)
    await engine.start()
    try:
        session = make_session("ps_rta")
        await engine.create(session, {}, b"n")
        assert await engine.save(replace(session, seq=1), 0, [b"e1"], {})  # loads it
        trips = RoundTrips(redis_server)
        entry = AuditAdd(b'{"id": "aud_rt"}', 10)
        assert await engine.save(replace(session, seq=2), 1, [b"e2"], {}, (), entry)
        spent = trips.spent()
        assert _ids(await engine.audit_read(0, 10)) == ["aud_rt"]
    finally:
        await engine.close()
    assert spent == 1


@needs_redis
async def test_a_create_is_one_round_trip_on_one_node(redis_server: RedisProc) -> None:
    engine = _counted_engine(redis_server, 8)
    await engine.start()
    try:
        rec = Recorder(engine)
        await engine.subscribe(None)
        await engine.create(make_session("ps_warm"), {}, b"w")  # loads the script
        trips = RoundTrips(redis_server)
        session = make_session("ps_one", created_at=T0 + 1)
        await engine.create(session, {"status:created": 1}, b"notice")
        spent = trips.spent()
        assert await engine.load("ps_one") == session
        assert [s.id for s in await engine.list_sessions(True, 10)] == ["ps_one", "ps_warm"]
        assert (await engine.counters())["status:created"] == 1
        await eventually(lambda: rec.of(None) == [b"w", b"notice"])
    finally:
        await engine.close()
    assert spent == 1


@needs_redis
async def test_a_save_on_one_node_touches_only_the_indexes_the_session_is_in(
    redis_server: RedisProc,
) -> None:
    engine = _counted_engine(redis_server, 7)
    await engine.start()
    try:
        session = make_session("ps_ix")
        await engine.create(session, {}, b"n")
        assert await engine.save(replace(session, seq=1), 0, [b"e1"], {})
        before = _calls(redis_server.port)
        assert await engine.save(replace(session, seq=2), 1, [b"e2"], {})
        after = _calls(redis_server.port)
        spent = {k: v - before.get(k, 0) for k, v in after.items() if v != before.get(k, 0)}
        # Flagged for review, then resolved: taken out of the review index again.
        flagged = replace(session, seq=3, needs_review=True, updated_at=T0 + 5)
        assert await engine.save(flagged, 2, [b"e3"], {})
        assert [s.id for s in await engine.list_review(10)] == ["ps_ix"]
        assert await engine.save(replace(flagged, seq=4, needs_review=False), 3, [b"e4"], {})
        assert await engine.list_review(10) == []
        # An older worker's save (a rolling deploy) flags it and leaves x as it was:
        # the next save takes it out of the review index all the same.
        port = redis_server.port
        older = replace(flagged, seq=5, version=5)
        record = _redis_record(older)
        _command_db(port, 7, "HSET", "paylive:{ps_ix}:s", "v", "5", "r", record)
        _command_db(port, 7, "ZADD", REVIEW, "5", "ps_ix")
        assert [s.id for s in await engine.list_review(10)] == ["ps_ix"]
        assert await engine.save(replace(older, seq=6, needs_review=False), 5, [b"e6"], {})
        assert await engine.list_review(10) == []
    finally:
        await engine.close()
    # Never in the effects, pending or review index: nothing removed from them, and
    # on one node no tver (Cluster's guard of its two steps).
    assert "zrem" not in spent and spent["hset"] == 1, spent


def _redis_record(session: Session) -> str:
    return json.dumps(session.to_record(), separators=(",", ":"))


def _command_db(port: int, db: int, *args: str) -> None:
    """One command on database ``db`` (MULTI-less: SELECT then the command, one
    connection), through redis-cli."""
    assert redisproc.REDIS_CLI is not None
    subprocess.run(
        [redisproc.REDIS_CLI, "-p", str(port), "-n", str(db), *args],
        check=True,
        capture_output=True,
        timeout=5,
    )


def _calls(port: int) -> dict[str, int]:
    """``INFO commandstats`` of one node: calls by command."""
    info = redisproc.command(port, "INFO", "commandstats").decode()
    return {
        line.split(":")[0].removeprefix("cmdstat_"): int(line.split("calls=")[1].split(",")[0])
        for line in info.splitlines()
        if line.startswith("cmdstat_")
    }


def _reads(server: RedisProc) -> int:
    """Reads Redis made from its clients' sockets (a command, a script or a pipeline each)."""
    info = redisproc.command(server.port, "INFO", "stats").decode()
    return int(info.split("total_reads_processed:")[1].split()[0])


class RoundTrips:
    """The reads Redis makes from its clients' sockets from now to ``spent``, less the
    reads that counting them costs (each count is an INFO of its own)."""

    def __init__(self, server: RedisProc) -> None:
        self.server = server
        self.idle = -_reads(server) + _reads(server)
        self.before = _reads(server)

    def spent(self) -> int:
        return _reads(self.server) - self.before - self.idle


def _counted_engine(server: RedisProc, db: int) -> RedisEngine:
    """A Redis engine on database ``db`` whose subscription is not probed, so that
    its round trips can be counted."""
    part = replace(SETTINGS, redis_probe_interval_ms=60_000).redis
    return RedisEngine(f"{server.url}/{db}", part)


async def test_unsubscribe_stops_delivery(engine: Engine) -> None:
    rec = Recorder(engine)
    await engine.subscribe("ps_a")
    await engine.subscribe(None)
    session = make_session("ps_a")
    await engine.create(session, {}, b"n")
    await engine.create(make_session("ps_fence"), {}, b"n")
    assert await engine.save(replace(session, seq=1), 0, [b"e1"], {})
    await eventually(lambda: rec.of("ps_a") == [b"e1"])

    await engine.unsubscribe("ps_a")
    await engine.unsubscribe("ps_a")  # twice is fine
    assert await engine.save(replace(session, seq=2), 1, [b"e2"], {})
    await eventually(lambda: rec.of(None)[-1:] == [b"e2"])  # the admin channel is a fence

    await engine.unsubscribe(None)
    await engine.subscribe("ps_fence")
    assert await engine.save(replace(session, seq=3), 2, [b"e3"], {})
    fence = await engine.load("ps_fence")
    assert fence is not None
    assert await engine.save(replace(fence, seq=1), 0, [b"f1"], {})
    await eventually(lambda: rec.of("ps_fence") == [b"f1"])
    assert rec.of("ps_a") == [b"e1"]
    assert rec.of(None) == [b"n", b"n", b"e1", b"e2"]


# Redis only -----------------------------------------------------------------


@pytest.mark.redis
@needs_redis
async def test_redis_keeps_a_session_whose_outbox_owes_a_call_past_its_expiry(
    redis_server: RedisProc,
) -> None:
    redis_server.flushall()
    engine = RedisEngine(redis_server.url, replace(SETTINGS, retention_after_end_ms=200).redis)
    try:
        await engine.start()
        session = make_session("ps_owed")
        await engine.create(session, {}, b"n")
        owed = with_refund(session, 1, T0 + 100)
        assert await engine.save(owed, 0, [b"late"], {})
        await anyio.sleep(0.3)  # past the retention of 0.2 s
        assert await engine.load("ps_owed") is not None, "no expiry while a call is owed"
        done_effect = replace(owed.effects[0], status="done", next_at=None, done_at=T0 + 200)
        confirmed = replace(owed, seq=2, effects=(done_effect,))
        assert await engine.save(confirmed, 1, [b"d"], {})
        await anyio.sleep(0.3)
        assert await engine.load("ps_owed") is not None, "no expiry while it awaits review"
        resolved = replace(confirmed, seq=3, needs_review=False)
        assert await engine.save(resolved, 2, [b"r"], {})
        await eventually(
            lambda: redisproc.command(
                redis_server.port, "EXISTS", "paylive:{ps_owed}:s"
            ).startswith(b":0")
        )
        assert await engine.load("ps_owed") is None
        assert await engine.list_with_effects(False, 10) == [], "gone from the listing too"
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            await engine.close()


@pytest.mark.redis
@needs_redis
async def test_the_purge_never_deletes_a_session_saved_as_kept_after_its_claim(
    redis_server: RedisProc,
) -> None:
    """The claim unindexes an ended session in one script and its keys are deleted in
    another (they live in other slots): a refund saved in between persisted the
    session, and the delete must leave it."""
    from paylive.engine.redis import scripts
    from paylive.engine.redis.keys import session_keys

    redis_server.flushall()
    engine = RedisEngine(redis_server.url, SETTINGS.redis)
    try:
        await engine.start()
        for session_id in ("ps_gone", "ps_kept"):
            session = make_session(session_id)
            await engine.create(session, {}, b"n")
            ended = replace(session, status=CANCELLED, seq=1, updated_at=T0 + 1_000)
            assert await engine.save(ended, 0, [b"c"], {})
        kept = await engine.load("ps_kept")
        assert kept is not None
        # The instant between the two steps: a late success's refund is saved.
        assert await engine.save(with_refund(kept, 2, T0 + 2_000), 1, [b"late"], {})
        client = engine._store._client  # the purge's own second step, run by hand
        for session_id in ("ps_gone", "ps_kept"):
            await client.eval(scripts.PURGE, session_keys(session_id), [])
        assert await engine.load("ps_gone") is None, "an ended session is purged"
        assert await engine.load("ps_kept") is not None, "the refund was wiped"
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            await engine.close()


@pytest.mark.redis
@needs_redis
async def test_two_engines_share_state_and_fan_out(
    redis_engines: Callable[..., Awaitable[RedisEngine]], redis_server: RedisProc
) -> None:
    a = await redis_engines()
    b = await redis_engines()
    rec_a, rec_b = Recorder(a), Recorder(b)
    await b.subscribe("ps_x")
    await b.subscribe(None)
    session = make_session("ps_x")
    await a.create(session, {"status:created": 1}, b"notice")
    assert await a.save(replace(session, seq=1), 0, [b"e1"], {})
    await eventually(lambda: rec_b.of("ps_x") == [b"e1"])
    assert rec_b.of(None) == [b"notice", b"e1"]
    assert rec_a.events == []  # a subscribed to nothing
    # One subscription connection per engine, however many channels it follows.
    for index in range(50):
        await b.subscribe(f"ps_many{index}")
    pubsub = redisproc.command(redis_server.port, "CLIENT", "LIST", "TYPE", "pubsub")
    assert pubsub.count(b"id=") == 2
    assert await b.load("ps_x") == replace(session, seq=1, version=1)
    assert await b.counters() == {"status:created": 1}

    # Both load version v and save at once, many times over: exactly one wins each.
    for version in range(1, 21):
        results = await asyncio.gather(
            a.save(replace(session, seq=version + 1), version, [b"a%d" % version], {}),
            b.save(replace(session, seq=version + 1), version, [b"b%d" % version], {}),
        )
        assert sorted(results) == [False, True]
    held = await a.history("ps_x", 16)
    assert held is not None and len(held) == 5
    assert (await a.load("ps_x")).version == 21  # type: ignore[union-attr]
    await eventually(lambda: len(rec_b.of("ps_x")) == 21)
    assert rec_b.of("ps_x")[-5:] == held


@pytest.mark.redis
@needs_redis
async def test_a_silent_subscription_is_detected(
    redis_engines: Callable[..., Awaitable[RedisEngine]],
) -> None:
    # A probe a tenth of a second, answered within one second: on a machine busy with
    # the parallel suite, 300 ms was once too short for a live subscription's answer.
    engine = await redis_engines(
        redis_probe_interval_ms=100, redis_probe_timeout_ms=1000, redis_backoff_cap_ms=200
    )
    rec = Recorder(engine)
    await engine.subscribe("ps_s")
    await anyio.sleep(0.6)  # several probes came back: a live subscription stays healthy
    assert engine.subscription_healthy and rec.resyncs == 0

    # Silence it behind the engine's back: the connection stays open and publishing
    # still works, but nothing is delivered any more. Only the probe can tell.
    conn = engine._subscription.conn
    assert conn is not None
    await conn.send_command("UNSUBSCRIBE")
    await eventually(lambda: not engine.subscription_healthy, timeout=4)
    await eventually(lambda: engine.subscription_healthy and rec.resyncs == 1, timeout=5)

    session = make_session("ps_s")
    await engine.create(session, {}, b"n")
    assert await engine.save(replace(session, seq=1), 0, [b"again"], {})
    await eventually(lambda: rec.of("ps_s") == [b"again"])


@pytest.mark.redis
@needs_redis
async def test_a_stale_cached_session_costs_a_failed_save_and_is_refreshed(
    redis_engines: Callable[..., Awaitable[RedisEngine]],
) -> None:
    a = await redis_engines()
    b = await redis_engines()
    session = make_session("ps_cache")
    await a.create(session, {}, b"n")
    assert await a.save(replace(session, seq=1), 0, [b"a1"], {})
    # B moves the session on; A is not subscribed to it, so it cannot know.
    fresh = await b.load_for_update("ps_cache")
    assert fresh is not None and fresh.version == 1
    assert await b.save(replace(fresh, seq=2, attempt=1), 1, [b"b2"], {})
    stale = await a.load_for_update("ps_cache")
    assert stale is not None and stale.version == 1  # A's own copy
    assert not await a.save(replace(stale, seq=2), 1, [b"lost"], {})
    # The failed save brought the current record back: A decides on it next.
    current = await a.load_for_update("ps_cache")
    assert current == replace(session, seq=2, attempt=1, version=2)
    assert await a.save(replace(current, seq=3), 2, [b"a3"], {})
    assert await b.history("ps_cache", 0) == [b"a1", b"b2", b"a3"]
    assert await b.load("ps_cache") == replace(session, seq=3, attempt=1, version=3)

    # Subscribed to the session, A hears B's change and forgets its copy at once.
    rec = Recorder(a)
    await a.subscribe("ps_cache")
    latest = await b.load_for_update("ps_cache")
    assert latest is not None
    assert await b.save(replace(latest, seq=4), 3, [b"b4"], {})
    await eventually(lambda: rec.of("ps_cache") == [b"b4"])
    again = await a.load_for_update("ps_cache")
    assert again is not None and again.version == 4 and again.seq == 4


@pytest.mark.redis
@needs_redis
async def test_records_stored_as_json_before_still_load(
    redis_engines: Callable[..., Awaitable[RedisEngine]], redis_server: RedisProc
) -> None:
    """Records are msgpack now; a JSON record (an older server's, or the fallback for
    metadata msgpack cannot hold) loads all the same."""
    engine = await redis_engines()
    huge = make_session("ps_json", metadata={"n": 2**70})
    await engine.create(huge, {}, b"n")
    assert await engine.load("ps_json") == huge
    old = make_session("ps_old")
    await engine.create(old, {}, b"n")
    record = json.dumps(old.to_record()).encode()
    redisproc.command(redis_server.port, "HSET", "paylive:{ps_old}:s", "r", record.decode())
    assert await engine.load("ps_old") == old
    assert await engine.save(replace(old, seq=1), 0, [b"e1"], {})
    assert await engine.load("ps_old") == replace(old, seq=1, version=1)


async def _busy_pair(
    redis_engines: Callable[..., Awaitable[RedisEngine]], **settings: Any
) -> tuple[RedisEngine, RedisEngine, Recorder, Session]:
    """An engine whose subscription is probed every 100 ms (``settings`` besides),
    following the session ``ps_busy`` that another engine, the publisher, created."""
    engine = await redis_engines(
        redis_probe_interval_ms=100, redis_probe_timeout_ms=200, **settings
    )
    publisher = await redis_engines()
    rec = Recorder(engine)
    await engine.subscribe("ps_busy")
    session = make_session("ps_busy")
    await publisher.create(session, {}, b"n")
    return engine, publisher, rec, session


@pytest.mark.redis
@needs_redis
async def test_a_held_command_connection_is_not_a_lost_subscription(
    redis_engines: Callable[..., Awaitable[RedisEngine]],
) -> None:
    """The shared command connection held by a long command (a BLPOP, as a slow
    script would hold it) for longer than the timeout: the commands behind it fail with
    EngineUnavailable within about the timeout, yet the subscription is checked on its
    own connection, stays healthy and keeps delivering: no resync. The next command
    gets a fresh connection."""
    engine, publisher, rec, session = await _busy_pair(redis_engines, redis_timeout_ms=600)
    assert await engine.load("ps_busy") is not None

    held = asyncio.create_task(engine._client.call("BLPOP", "paylive:test:never", 30))
    await asyncio.sleep(0)
    started = time.monotonic()
    with pytest.raises(EngineUnavailable):
        async with engine._client.op():
            await asyncio.gather(held, engine.load("ps_busy"))
    assert time.monotonic() - started < 2.0, "bounded by the timeout, not by the BLPOP"
    for seq in range(1, 6):
        assert await publisher.save(replace(session, seq=seq), seq - 1, [b"e%d" % seq], {})
    await eventually(lambda: len(rec.of("ps_busy")) == 5)
    assert rec.of("ps_busy") == [b"e1", b"e2", b"e3", b"e4", b"e5"]
    assert engine.subscription_healthy and rec.resyncs == 0
    loaded = await engine.load("ps_busy")
    assert loaded is not None and loaded.seq == 5, "a fresh connection serves again"


@pytest.mark.redis
@needs_redis
async def test_a_saturated_command_pool_is_not_a_lost_subscription(
    redis_engines: Callable[..., Awaitable[RedisEngine]],
) -> None:
    """Every pooled connection (the one for listings and probes) busy for many probe
    timeouts: its commands fail with EngineUnavailable, yet the subscription is checked
    on its own connection, stays healthy and keeps delivering: no resync."""
    engine, publisher, rec, session = await _busy_pair(
        redis_engines, redis_pool_size=1, redis_timeout_ms=1_000
    )

    pool = engine._client._pool
    assert pool is not None
    # The pool's only connection, taken as a long command takes it, for as long as the
    # test says (about 1.8 s: nine probe timeouts).
    held = await pool.get_connection()
    try:
        with pytest.raises(EngineUnavailable):
            await engine.list_sessions(False, 10)  # exhausted for 1 s: 503 material
        for seq in range(1, 6):
            assert await publisher.save(replace(session, seq=seq), seq - 1, [b"e%d" % seq], {})
            await anyio.sleep(0.15)
    finally:
        await pool.release(held)
    await eventually(lambda: len(rec.of("ps_busy")) == 5)
    assert rec.of("ps_busy") == [b"e1", b"e2", b"e3", b"e4", b"e5"]
    assert engine.subscription_healthy and rec.resyncs == 0
    assert [s.id for s in await engine.list_sessions(False, 10)] == ["ps_busy"]


@pytest.mark.redis
@needs_redis
async def test_the_commands_of_one_turn_share_one_write_and_keep_their_order(
    redis_engines: Callable[..., Awaitable[RedisEngine]], redis_server: RedisProc
) -> None:
    """Forty loads started in one turn reach Redis in a few reads, not forty, and each
    gets its own session; one cancelled on the way leaves its reply to be dropped, not
    handed to the next; an error reply fails its command only."""
    engine = await redis_engines()
    ids = [f"ps_turn{i}" for i in range(40)]
    for session_id in ids:
        await engine.create(make_session(session_id), {}, b"n")
    trips = RoundTrips(redis_server)
    loads = [asyncio.create_task(engine.load(session_id)) for session_id in ids]
    await asyncio.sleep(0)
    loads[5].cancel()
    done = await asyncio.gather(*loads, return_exceptions=True)
    reads = trips.spent()
    assert isinstance(done[5], asyncio.CancelledError)
    got = [s.id for i, s in enumerate(done) if i != 5 and isinstance(s, Session)]
    assert got == [session_id for i, session_id in enumerate(ids) if i != 5]
    assert 1 <= reads <= 4, f"{reads} reads for 40 commands"

    with pytest.raises(ResponseError):
        await engine._client.call("HGET", "only-a-key")
    loaded = await engine.load("ps_turn7")
    assert loaded is not None and loaded.id == "ps_turn7"


@pytest.mark.redis
@needs_redis
async def test_a_killed_command_connection_is_made_anew(
    redis_engines: Callable[..., Awaitable[RedisEngine]], redis_server: RedisProc
) -> None:
    """Redis closes the shared connection (CLIENT KILL, as a restart or a proxy would):
    a command then in flight fails as unavailable, and the next one connects again."""
    engine = await redis_engines()
    await engine.create(make_session("ps_kill"), {}, b"n")
    assert await engine.load("ps_kill") is not None
    in_flight = asyncio.create_task(engine._client.call("BLPOP", "paylive:test:never", 5))
    await asyncio.sleep(0.1)
    redisproc.command(redis_server.port, "CLIENT", "KILL", "TYPE", "normal")
    with pytest.raises(EngineUnavailable):
        async with engine._client.op():
            await in_flight
    loaded = await engine.load("ps_kill")
    assert loaded is not None and loaded.id == "ps_kill"


@pytest.mark.redis
@needs_redis
async def test_the_command_pool_hands_its_connections_on_in_turn(
    redis_engines: Callable[..., Awaitable[RedisEngine]],
) -> None:
    """One pooled connection (listings, probes), many commands at once: each waits for
    it in turn, and a waiter that gives up (cancelled) passes its turn on instead of
    keeping it."""
    engine = await redis_engines(redis_pool_size=1, redis_timeout_ms=2_000)
    await engine.create(make_session("ps_pool"), {}, b"n")
    loads = [asyncio.create_task(engine.list_sessions(False, 5)) for _ in range(20)]
    await asyncio.sleep(0)
    loads[5].cancel()
    done = await asyncio.gather(*loads, return_exceptions=True)
    assert isinstance(done[5], asyncio.CancelledError)
    assert all(isinstance(s, list) for i, s in enumerate(done) if i != 5)
    assert [s.id for s in done[0]] == ["ps_pool"]  # type: ignore[union-attr]
    pool = engine._client._pool
    assert pool is not None and len(pool._available_connections) == 1


@pytest.mark.redis
@needs_redis
async def test_data_survives_a_restart_with_append_only_file(tmp_path: Path) -> None:
    server = redisproc.start_redis(tmp_path / "aof", appendonly=True)
    engine = RedisEngine(server.url, SETTINGS.redis)
    try:
        await engine.start()
        rec = Recorder(engine)
        session = make_session("ps_keep")
        await engine.create(session, {"status:created": 1}, b"n")
        assert await engine.save(replace(session, seq=1), 0, [b"e1"], {})
        await engine.put("idem:keep", b"v", 60_000)
        owed = make_session("ps_owed")
        await engine.create(owed, {}, b"n")
        assert await engine.save(with_refund(owed, 1, T0 + 100), 0, [b"late"], {})
        assert await engine.claim_effects(T0 + 100, 10, 5_000) == ["ps_owed"]

        server.stop()
        server.start()
        await eventually(lambda: engine.subscription_healthy and rec.resyncs == 1, timeout=10)

        # The outbox and its lease came back with everything else.
        assert await engine.load("ps_owed") == replace(with_refund(owed, 1, T0 + 100), version=1)
        assert await engine.claim_effects(T0 + 5_099, 10, 5_000) == []
        assert await engine.claim_effects(T0 + 5_100, 10, 5_000) == ["ps_owed"]

        assert await engine.load("ps_keep") == replace(session, seq=1, version=1)
        assert await engine.history("ps_keep", 0) == [b"e1"]
        assert await engine.get("idem:keep") == b"v"
        # ps_owed is flagged for review: counted from the review list, which came back.
        assert await engine.counters() == {"status:created": 1, "needs_review": 1}
        assert await engine.claim_due(session.expires_at, 10, 1_000) == ["ps_keep"]
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            await engine.close()
        server.stop()


async def _assert_unavailable_fast(engine: RedisEngine) -> float:
    started = time.monotonic()
    with pytest.raises(EngineUnavailable):
        await engine.load("ps_o")
    with pytest.raises(EngineUnavailable):
        await engine.ping()
    with pytest.raises(EngineUnavailable):
        await engine.save(make_session("ps_o"), 1, [b"x"], {})
    elapsed = time.monotonic() - started
    return elapsed


@pytest.mark.redis
@needs_redis
@pytest.mark.parametrize("outage", ["stopped", "frozen"])
async def test_outage_fails_fast_and_recovers(tmp_path: Path, outage: str) -> None:
    """Stopped: connections close. Frozen (SIGSTOP): nothing answers and nothing closes,
    so only the timeouts and the probe can tell."""
    server = redisproc.start_redis(tmp_path / "outage", appendonly=True)
    # Frozen, each of the four calls below waits out the timeout: 0.6 s rather than the
    # default 1 s. Stopped, calls fail at once, and the restarted server (its file
    # reloaded) must be given the default to answer on a loaded machine.
    timeout_ms = 600 if outage == "frozen" else FAST_PROBE.redis_timeout_ms
    engine = RedisEngine(server.url, replace(FAST_PROBE, redis_timeout_ms=timeout_ms).redis)
    try:
        await engine.start()
        assert engine.subscription_healthy
        rec = Recorder(engine)
        await engine.subscribe("ps_o")
        session = make_session("ps_o")
        await engine.create(session, {}, b"n")
        assert await engine.save(replace(session, seq=1), 0, [b"before"], {})
        await eventually(lambda: rec.of("ps_o") == [b"before"])

        if outage == "stopped":
            server.stop()
        else:
            server.pause()
        # Three calls, each must give up within about a second.
        assert await _assert_unavailable_fast(engine) < 4.0
        started = time.monotonic()
        with pytest.raises(EngineUnavailable):
            await engine.load("ps_o")
        assert time.monotonic() - started < 1.6
        await eventually(lambda: not engine.subscription_healthy, timeout=3)
        await engine.subscribe("ps_during")  # while down: subscribed once it is back

        if outage == "stopped":
            server.start()
        else:
            server.resume()
        await eventually(lambda: engine.subscription_healthy and rec.resyncs == 1, timeout=10)

        assert await engine.save(replace(session, seq=2), 1, [b"after"], {})
        await engine.create(make_session("ps_during"), {}, b"n")
        during = await engine.load("ps_during")
        assert during is not None
        assert await engine.save(replace(during, seq=1), 0, [b"d1"], {})
        await eventually(lambda: rec.of("ps_o") == [b"before", b"after"])
        await eventually(lambda: rec.of("ps_during") == [b"d1"])
        await engine.ping()
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            await engine.close()
        server.stop()


@pytest.mark.redis
@needs_redis
async def test_starting_while_redis_is_down(tmp_path: Path) -> None:
    server = redisproc.RedisProc(port=redisproc.free_port(), directory=tmp_path / "late")
    # The start waits twice the command timeout for a subscription that cannot come.
    part = replace(SETTINGS, redis_backoff_cap_ms=300, redis_timeout_ms=500).redis
    engine = RedisEngine(server.url, part)
    try:
        rec = Recorder(engine)
        started = time.monotonic()
        await engine.start()  # not an error: the worker starts and reports not ready
        assert time.monotonic() - started < 3.0
        assert not engine.subscription_healthy
        await engine.subscribe("ps_late")
        with pytest.raises(EngineUnavailable):
            await engine.ping()

        server.start()
        # Subscribers that came while it was down may have missed events: resync.
        await eventually(lambda: engine.subscription_healthy and rec.resyncs == 1, timeout=5)
        session = make_session("ps_late")
        # The 500 ms timeout that bounds the start above can also cut a first connect
        # on a machine starved by the parallel suite (seen at load average 11): tried
        # again, as a worker's next request would be, within a bound.
        with anyio.fail_after(5):
            while True:
                try:
                    await engine.create(session, {}, b"n")
                    break
                except EngineUnavailable:
                    await anyio.sleep(0.1)
        assert await engine.save(replace(session, seq=1), 0, [b"e1"], {})
        await eventually(lambda: rec.of("ps_late") == [b"e1"])
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            await engine.close()
        server.stop()


@pytest.fixture(scope="module")
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[redisproc.RedisClusterProc]:
    """One three-node cluster for the module: ``redis-cli --cluster create`` waits in
    whole seconds for the nodes to join, about 3 s of each start."""
    if redisproc.REDIS_SERVER is None or redisproc.REDIS_CLI is None:
        pytest.skip("redis-server and redis-cli are needed")
    cluster = redisproc.start_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.redis
@needs_redis
@pytest.mark.parametrize("sharded", [True, False], ids=["spublish", "publish"])
async def test_cluster(redis_cluster: redisproc.RedisClusterProc, sharded: bool) -> None:
    cluster = redis_cluster
    # Each test starts from an empty cluster with its command counts at zero.
    cluster.flushall()
    for node in cluster.nodes:
        assert redisproc.command(node.port, "CONFIG", "RESETSTAT").startswith(b"+OK")
    engines: list[RedisEngine] = []
    try:
        engine = RedisEngine(
            cluster.url,
            replace(
                SETTINGS,
                redis_probe_interval_ms=100,
                # Nothing here fails on purpose: 2 s, so that a loop starved by the
                # parallel suite is not taken for a lost subscription (500 ms once was).
                redis_probe_timeout_ms=2_000,
                redis_sharded_pubsub=sharded,
            ).redis,
        )
        engines.append(engine)
        await engine.start()
        assert engine.cluster and engine.subscription_healthy
        assert engine.sharded is sharded
        # The trail of every session is in the global slot: an action's entry is
        # copied after its save (``AuditTrail.recorded``), never by the save too.
        assert not engine.saves_audit
        rec = Recorder(engine)
        await engine.subscribe(None)

        ids = [f"ps_c{index}" for index in range(6)]
        # The sessions spread over the three nodes' slot ranges.
        assert len({key_slot(sid.encode()) * 3 // 16384 for sid in ids}) > 1
        for index, session_id in enumerate(ids):
            await engine.subscribe(session_id)
            session = make_session(session_id, created_at=T0 + index)
            made = await engine.create(session, {"status:created": 1}, b"n-" + session_id.encode())
            assert made is True
            paying = replace(session, status=PROCESSING, deadline=T0 + 30_000, seq=1)
            assert await engine.save(paying, 0, [session_id.encode()], {})
            assert not await engine.save(paying, 0, [b"stale"], {})
            # Made already: neither its slot nor the global one changes.
            assert await engine.create(session, {"status:created": 1}, b"again") is False

        await eventually(lambda: len(rec.of(None)) == 12)
        for session_id in ids:
            assert rec.of(session_id) == [session_id.encode()]
            assert await engine.history(session_id, 0) == [session_id.encode()]
            loaded = await engine.load(session_id)
            assert loaded is not None and loaded.version == 1
        listed = await engine.list_sessions(True, 10)
        assert [s.id for s in listed] == ids[::-1]
        assert await engine.counters() == {"status:created": 6}
        assert sorted(await engine.claim_due(T0 + 30_000, 10, 1_000)) == sorted(ids)
        assert await engine.claim_due(T0 + 30_000, 10, 1_000) == []
        assert await engine.put_if_absent("idem:c", b"v", 10_000) is None
        assert await engine.get("idem:c") == b"v"
        # The outbox is saved in the session's slot, its due time and indexes follow.
        for session_id in ids[:3]:
            paying = await engine.load(session_id)
            assert paying is not None
            assert await engine.save(with_refund(paying, 2, T0 + 100), 1, [b"r"], {})
        assert sorted(await engine.claim_effects(T0 + 100, 10, 1_000)) == sorted(ids[:3])
        assert await engine.claim_effects(T0 + 100, 10, 1_000) == []
        assert sorted(s.id for s in await engine.list_with_effects(True, 10)) == sorted(ids[:3])
        assert sorted(s.id for s in await engine.list_review(10)) == sorted(ids[:3])
        assert await engine.oldest_pending_effect() == T0 + 100
        # Merchant events owed to the shop are outbox items too; the events log and the
        # delivery records live in the global slot.
        event = {"id": "evt_c", "type": "session.cancelled", "session": {"id": ids[3]}}
        base = await engine.load(ids[3])
        assert base is not None
        owed = replace(base, status=CANCELLED, deliveries=(Delivery(event, T0 + 200, T0 + 200),))
        assert await engine.save(owed, 1, [b"c"], {})
        assert await engine.load(ids[3]) == replace(owed, version=2)
        assert await engine.claim_effects(T0 + 200, 10, 1_000) == [ids[3]]
        assert ids[3] not in [s.id for s in await engine.list_with_effects(True, 10)]
        [cursor] = await engine.log_append([("evt_c", T0, b"r")])
        assert cursor > T0 * 1000  # a new log's cursors start from the clock
        assert await engine.log_read(0, 5) == [(cursor, b"r")]
        await engine.delivery_put("evt_c", b"d", False, T0)
        assert await engine.deliveries(False, 5) == [b"d"]
        # The probes, published through any node, come back over the bus.
        await anyio.sleep(0.5)
        assert engine.subscription_healthy and rec.resyncs == 0
        # Sharded: each event is published once, on the node of its channel's slot,
        # and never broadcast; plain: PUBLISH only.
        calls = [_calls(node.port) for node in cluster.nodes]
        if sharded:
            assert sum(c.get("publish", 0) for c in calls) == 0
            # 6 notices + 6 saves + 4 later saves to the admin channel, 10 to sessions.
            assert sum(c.get("spublish", 0) for c in calls) == 26
            assert sum(1 for c in calls if c.get("spublish")) >= 2  # spread over nodes
            assert sum(1 for c in calls if c.get("ssubscribe")) == 3  # one per primary
        else:
            assert sum(c.get("spublish", 0) for c in calls) == 0
            assert sum(c.get("publish", 0) for c in calls) == 26

        # Without the ?cluster=1 flag the engine finds out by itself.
        detected = RedisEngine(cluster.nodes[1].url, SETTINGS.redis)
        engines.append(detected)
        await detected.start()
        assert detected.cluster
        assert await detected.load(ids[0]) == await engine.load(ids[0])
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            for engine in engines:
                await engine.close()


# The first command of a newly started engine, one of each way it reaches Redis: a
# script (EVALSHA), a plain keyed command of each family the Cluster client routes by
# parsing its keys (ZADD, the save's first step; SET, HDEL), and a read.
FIRST_COMMANDS: dict[str, Callable[[RedisEngine], Awaitable[object]]] = {
    "save": lambda e: e.save(make_session("ps_first", status=PROCESSING, deadline=T0), 0, [], {}),
    "put": lambda e: e.put("first", b"v", 10_000),
    "forget_counters": lambda e: e.forget_counters(["first"]),
    "create": lambda e: e.create(make_session("ps_first_made"), {}, b"n"),
    "load": lambda e: e.load("ps_first"),
}


@pytest.mark.redis
@needs_redis
@pytest.mark.parametrize("sharded", [True, False], ids=["spublish", "publish"])
@pytest.mark.parametrize("flagged", [True, False], ids=["flag", "detected"])
async def test_the_first_command_after_start_on_a_cluster(
    redis_cluster: redisproc.RedisClusterProc, sharded: bool, flagged: bool
) -> None:
    """The sharded subscription reads the slot map as the engine starts: the client
    must still be ready for any first command, not fail it (redis-py once raised
    AttributeError, for every such command, until something initialized the client)."""
    url = redis_cluster.url if flagged else redis_cluster.nodes[1].url
    settings = replace(SETTINGS, redis_sharded_pubsub=sharded).redis
    for name, first in FIRST_COMMANDS.items():
        engine = RedisEngine(url, settings)
        try:
            await engine.start()
            assert engine.cluster and engine.sharded is sharded
            await first(engine)
            await first(engine)
        except Exception as exc:
            raise AssertionError(f"{name} as the first command: {exc!r}") from exc
        finally:
            with anyio.fail_after(CLOSE_TIMEOUT_S):
                await engine.close()


@pytest.mark.redis
@needs_redis
async def test_a_cluster_create_asked_again_makes_its_lost_second_step_once(
    redis_cluster: redisproc.RedisClusterProc,
) -> None:
    """A create whose reply was lost after its first step (the session's own keys):
    asked again, the engine makes the global step (listing, counters, timer), once."""
    from paylive.engine.redis import scripts
    from paylive.engine.redis.keys import session_keys
    from paylive.engine.redis.store import _dump

    redis_cluster.flushall()
    engine = RedisEngine(redis_cluster.url, SETTINGS.redis)
    try:
        await engine.start()
        session = make_session("ps_half_made")
        own = [_dump(session), 0, session.status, 60_000]
        async with engine._client.op():
            assert await engine._client.eval(scripts.CREATE, session_keys(session.id), own)
        assert await engine.list_sessions(False, 10) == []
        assert await engine.create(session, {"status:created": 1}, b"n") is False
        for _ in range(2):
            await engine.finish_create(session, {"status:created": 1}, b"n")
        assert [s.id for s in await engine.list_sessions(False, 10)] == [session.id]
        assert await engine.counters() == {"status:created": 1}
        assert await engine.claim_due(session.expires_at, 10, 1_000) == [session.id]
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            await engine.close()


@pytest.mark.redis
@needs_redis
async def test_a_cluster_create_that_finds_another_stored_changes_nothing(
    redis_cluster: redisproc.RedisClusterProc,
) -> None:
    """A retry's create whose lost first try landed after its read (Cluster: only the
    first step): the session stored is the first try's, and the retry's own (made
    later: another ``created_at``, a later expiry) must not list, count or time it;
    the service completes the stored one with its own (``finish_create``)."""
    from paylive.engine.redis import scripts
    from paylive.engine.redis.keys import session_keys
    from paylive.engine.redis.store import _dump

    redis_cluster.flushall()
    engine = RedisEngine(redis_cluster.url, SETTINGS.redis)
    try:
        await engine.start()
        first = make_session("ps_landed_late")
        retry = make_session("ps_landed_late", created_at=T0 + 600_000)
        own = [_dump(first), 0, first.status, 60_000]
        async with engine._client.op():
            assert await engine._client.eval(scripts.CREATE, session_keys(first.id), own)
        assert await engine.create(retry, {"status:created": 1}, b"n") is False
        assert await engine.list_sessions(False, 10) == []
        assert await engine.counters() == {}
        for _ in range(2):
            await engine.finish_create(first, {"status:created": 1}, b"n")
        assert await engine.counters() == {"status:created": 1}
        # Timed by the stored session's expiry, not the retry's ten minutes later.
        assert await engine.claim_due(first.expires_at, 10, 1_000) == [first.id]
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            await engine.close()


async def test_a_fault_inside_redis_py_is_the_engine_unavailable_not_a_500() -> None:
    from redis._parsers.commands import AsyncCommandsParser

    from paylive.engine.redis.client import Client

    client = Client("redis://127.0.0.1:1?cluster=0", SETTINGS.redis)
    try:
        # redis-py's own AttributeError: the parser asked for keys before it has a node.
        with pytest.raises(EngineUnavailable, match="AttributeError"):
            async with client.op():
                await AsyncCommandsParser().get_keys("SET", "k", "v")
        with pytest.raises(AttributeError, match="ours"):  # our own faults stay ours
            async with client.op():
                raise AttributeError("ours")
    finally:
        await client.close()


async def test_the_chart_counts_each_minute_of_the_last_hour(engine: Engine) -> None:
    """State changes and interruptions per minute, counted with each save at the
    service's clock (injected here), read back by any worker, the old minutes dropped."""
    from paylive.core.machine import ProviderResult, StartAttempt
    from paylive.core.stats import chart, stale_minutes
    from paylive.gateway.sandbox import SandboxGateway
    from paylive.service.payments import PaymentService
    from paylive.service.reads import Reads

    now = [T0]
    sent: list[dict[str, object]] = []

    async def send(body: dict[str, object]) -> None:
        sent.append(body)

    settings = replace(SETTINGS, sandbox_delay_ms=3_600_000)  # no webhook during the test
    service = PaymentService(
        settings.service, engine, SandboxGateway(settings.sandbox, engine, send), lambda: now[0]
    )
    card = {"card": "4242424242424242"}
    # Minute 0: a payment that is declined (two changes, one interruption); minute 5:
    # the retry that pays (two changes); 70 minutes ago: one change, out of the window.
    session = await service.create("order-chart", 500, "EUR", {})
    now[0] = T0 - 70 * 60_000
    old = await service.create("order-old", 500, "EUR", {})
    await service.run(old.id, StartAttempt(card))
    now[0] = T0 + 1_000
    await service.run(session.id, StartAttempt(card))
    now[0] = T0 + 2_000
    await service.run(session.id, ProviderResult(1, "declined", "card_declined"))
    now[0] = T0 + 5 * 60_000 + 1_000
    await service.run(session.id, StartAttempt())
    await service.run(session.id, ProviderResult(2, "succeeded"))

    reads = Reads(settings.reads, engine, lambda: T0 + 10 * 60_000)
    got = await reads.chart()
    minutes = got["minutes"]
    assert len(minutes) == 60 and minutes[-1]["at"] == (T0 + 10 * 60_000) // 60_000 * 60_000
    by_at = {m["at"]: (m["changes"], m["interruptions"]) for m in minutes}
    start = T0 // 60_000 * 60_000
    assert by_at[start] == (2, 1)
    assert by_at[start + 5 * 60_000] == (2, 0)
    assert sum(c for c, _ in by_at.values()) == 4, "the change 70 minutes ago is not shown"
    # The summary loop's pruning: only the minutes past the window go.
    counters = await engine.counters()
    stale = stale_minutes(counters, T0 + 10 * 60_000)
    assert stale and all(
        name.startswith(f"minute:{(T0 - 70 * 60_000) // 60_000}:") for name in stale
    )
    await engine.forget_counters(stale)
    after = await engine.counters()
    assert not stale_minutes(after, T0 + 10 * 60_000)
    assert chart(after, T0 + 10 * 60_000) == chart(counters, T0 + 10 * 60_000)
    assert after["status:succeeded"] == 1, "the summary's counters are untouched"


async def test_the_audit_trail_keeps_the_newest(engine: Engine) -> None:
    for n in range(5):
        await engine.audit_add(json.dumps({"id": f"aud_{n}"}).encode(), 3)
    assert [json.loads(raw)["id"] for raw in await engine.audit_read(0, 10)] == [
        "aud_4",
        "aud_3",
        "aud_2",
    ]
    assert [json.loads(raw)["id"] for raw in await engine.audit_read(1, 1)] == ["aud_3"]
    assert [json.loads(raw)["id"] for raw in await engine.audit_read(2, 5)] == ["aud_2"]
    assert await engine.audit_read(3, 5) == []


def _ids(raw: list[bytes]) -> list[str]:
    return [json.loads(entry)["id"] for entry in raw]


async def test_a_save_that_records_an_action_adds_its_entry_to_the_trail(engine: Engine) -> None:
    """docs/protocol.md 8.2: an action's entry reaches the trail of every session in the
    save that records it in its session, not in an ``audit_add`` after it (which a
    worker dying or losing Redis between the two never made). A save without one, or
    one that loses its compare-and-set, adds nothing; the trail keeps the newest."""
    assert engine.saves_audit
    session = make_session("ps_au")
    await engine.create(session, {}, b"n")
    assert await engine.save(replace(session, seq=1), 0, [b"e1"], {"plain": 1})
    assert await engine.audit_read(0, 10) == []
    for n in range(4):
        entry = AuditAdd(json.dumps({"id": f"aud_{n}"}).encode(), 3)
        # With a record claimed and stats too: each finds its own arguments.
        claim = RecordClaim(f"au:{n}", b"v", 10_000, unless="au:off")
        changed = replace(session, seq=2 + n)
        assert await engine.save(changed, 1 + n, [b"e"], {"acted": 1}, [claim], entry)
        assert await engine.claim(claim.key, b"v", 10_000, unless="au:off") == Claim()
    lost = AuditAdd(b'{"id": "aud_lost"}', 3)
    assert await engine.save(replace(session, seq=9), 0, [b"x"], {"acted": 1}, (), lost) is False
    assert _ids(await engine.audit_read(0, 10)) == ["aud_3", "aud_2", "aud_1"]
    counters = await engine.counters()
    assert counters["plain"] == 1 and counters["acted"] == 4, counters


async def test_a_hold_is_captured_or_released_once_when_both_race(engine: Engine) -> None:
    """The sandbox's capture (the outbox) and release (a retry or cancel on another
    request) of one hold at the same time: one of them decides, and both answers say
    the same thing. Each read the ledger and then wrote it once, and on Redis both
    succeeded: the capture said the money was taken, the release that nothing moved."""
    from paylive.gateway.sandbox import AUTHORIZED, SandboxGateway

    settings = replace(SETTINGS, sandbox_authorize_first=True)
    sandbox = SandboxGateway(settings.sandbox, engine, send=None)
    for n in range(20):
        key = f"ps_race{n}:1"
        await engine.put(f"sandbox:req:{key}", b"succeeded", 60_000)
        await engine.put(f"sandbox:{key}", AUTHORIZED, 60_000)
        captured, taken = await asyncio.gather(
            sandbox.capture(key, None, f"{key}:capture"), sandbox.void(key, None)
        )
        assert captured == taken, (n, captured, taken)
        ledger = await engine.get(f"sandbox:{key}")
        assert ledger == (b"charged" if captured else b"voided"), (n, ledger)
        # Asked again, each is answered as decided.
        assert await sandbox.capture(key, None, f"{key}:capture") is captured
        assert await sandbox.void(key, None) is captured


async def test_a_redis_user_refused_the_write_is_not_writable(redis_server: RedisProc) -> None:
    # Readiness asks ``writable``: an answer that refuses the write for any reason (here
    # an ACL without SET, NOPERM) must read as "takes no write", not reach /readyz as a
    # raised error (a 500 where a load balancer expects 503).
    user = f"noset{uuid.uuid4().hex[:8]}"
    redisproc.command(
        redis_server.port, "ACL", "SETUSER", user, "on", "nopass", "~*", "&*", "+@all", "-set"
    )
    engine = RedisEngine(redis_server.url.replace("://", f"://{user}:x@", 1), SETTINGS.redis)
    try:
        await engine.start()
        assert await engine.writable() is False
    finally:
        with anyio.fail_after(CLOSE_TIMEOUT_S):
            await engine.close()
        redisproc.command(redis_server.port, "ACL", "DELUSER", user)
