"""The PostgreSQL archive against the machine's real PostgreSQL (a database of our own
per run, dropped after): migrations, the follower, searches, and a real server whose
Redis forgets sessions that the archive still answers for, also across an outage.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

import httpx
import pytest

from paylive.archive import AuditQuery, SessionQuery, open_archive
from paylive.archive.schema import migrations
from paylive.core.codec import Encoded, Message
from paylive.core.machine import Cancel, Decision, Rules, StartAttempt, decide, new_session
from paylive.core.merchant import log_record, merchant_events, snapshot_record
from paylive.engine.memory import MemoryEngine
from paylive.service.retention import DAY_MS, Retention
from paylive.settings import Settings

from ..support import postgres, redisproc
from ..support.client import admin, create, merchant
from ..support.postgres import Database
from ..support.servers import Server
from ..support.tcpproxy import TcpProxy
from ..support.waiting import until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not postgres.reachable() and not os.environ.get("PAYLIVE_REQUIRE_POSTGRES"),
        reason="no PostgreSQL on 127.0.0.1:5432 (.ci/run starts one)",
    ),
]

RULES = Rules(attempt_timeout_ms=1_000, max_attempts=2, retry_delay_ms=0, session_ttl_ms=60_000)
T0 = 1_764_000_000_000
DAY = 24 * 3600 * 1000


def cancelled_session(session_id: str, order_id: str, at: int) -> tuple[list[bytes], list[Message]]:
    """A session paid for, then cancelled: its history and the cancel's messages."""
    s = new_session(session_id, order_id, 700, "EUR", {"cart": "7"}, at, RULES)
    started = decide(s, StartAttempt({"card": "4242424242424242"}), at + 1, RULES)
    assert isinstance(started, Decision)
    done = decide(started.session, Cancel(), at + 2, RULES, {1: False})
    assert isinstance(done, Decision) and done.session.status == "cancelled"
    history = [Encoded.of(m).json for m in started.events + done.events]
    return history, list(done.events)


async def test_migrations_follow_search_and_purge(db: Database) -> None:
    assert [name for _, name, _ in migrations()][0] == "0001_initial.sql"
    engine = MemoryEngine(Settings().engine)
    base = await engine.log_first() - 1  # a new log's cursors start from the clock
    for i, (at, order) in enumerate(
        [(T0, "order-a"), (T0 + DAY, "order-b"), (T0 + 2 * DAY, "order-a")]
    ):
        history, messages = cancelled_session(f"ps_arch{i}", order, at)
        [event] = merchant_events(False, messages)
        await engine.log_append([(event.id, event.created, log_record(event.body(), history))])

    archive = open_archive(db.url)
    try:
        await archive.start()
        # Two workers starting at once apply the migrations once.
        again = open_archive(db.url)
        await again.start()
        await again.close()
        applied = [r["name"] for r in db.fetch("SELECT name FROM paylive_migrations")]
        assert applied == [name for _, name, _ in migrations()], "each applied once"
        assert await archive.mark() == 0
        mark = await archive.follow(lambda after: engine.log_read(after, 2))
        assert mark == base + 2
        assert await archive.follow(lambda after: engine.log_read(after, 2)) == base + 3
        # Nothing new.
        assert await archive.follow(lambda after: engine.log_read(after, 2)) == base + 3

        session = await archive.session("ps_arch1")
        assert session is not None and session["status"] == "cancelled"
        assert session["order_id"] == "order-b" and session["metadata"] == {"cart": "7"}
        history = await archive.history("ps_arch1")
        assert [h["seq"] for h in history] == [1, 2] and history[1]["data"]["cause"] == "cancelled"
        assert await archive.session("ps_nope") is None

        async def ids(**query: Any) -> list[str]:
            return [s["id"] for s in await archive.search(SessionQuery(**query))]

        assert await ids(order_id="order-a") == ["ps_arch2", "ps_arch0"]
        assert await ids(status="cancelled", limit=1) == ["ps_arch2"]
        assert await ids(created_from=T0 + DAY, created_to=T0 + 2 * DAY) == ["ps_arch1"]
        assert await ids(session_id="ps_arch0") == ["ps_arch0"]
        assert await ids(status="succeeded") == []

        page = await archive.events(base + 1, 10)
        assert [cursor for cursor, _ in page] == [base + 2, base + 3]
        assert await archive.mark() == base + 3
        plan = db.fetch(
            "EXPLAIN SELECT body FROM paylive_sessions WHERE order_id = 'x'"
            " ORDER BY created_at DESC LIMIT 5"
        )
        assert "paylive_sessions_order" in " ".join(r[0] for r in plan)

        # PAYLIVE_ARCHIVE_DAYS: whatever ended before the cut is forgotten, history too.
        assert await archive.purge(T0 + DAY + 10) == 2 + 2
        assert await ids() == ["ps_arch2"]
        assert db.fetch("SELECT count(*) FROM paylive_session_events")[0][0] == 2
    finally:
        await archive.close()


async def test_the_audit_trail_is_kept_and_searched_by_staff_session_and_date(
    db: Database,
) -> None:
    archive = open_archive(db.url)
    try:
        entries = [
            {"id": "aud_1", "at": T0, "staff": "ana", "action": "refund", "session": "ps_a"},
            {"id": "aud_2", "at": T0 + DAY, "staff": "bo", "action": "send_again", "session": "ps_a"},
            {"id": "aud_3", "at": T0 + 2 * DAY, "staff": "ana", "action": "sandbox_outage", "session": None},
        ]  # fmt: skip
        await archive.audit_add(entries)
        await archive.audit_add(entries[:1])  # written again (a catch-up): still once

        async def ids(**query: Any) -> list[str]:
            return [e["id"] for e in await archive.audit_search(AuditQuery(**query))]

        assert await ids() == ["aud_3", "aud_2", "aud_1"]
        assert await ids(staff="ana") == ["aud_3", "aud_1"]
        assert await ids(session_id="ps_a") == ["aud_2", "aud_1"]
        assert await ids(at_from=T0 + DAY, at_to=T0 + 2 * DAY) == ["aud_2"]
        assert await ids(limit=1) == ["aud_3"]
        # After a place in the trail: at, then id for one millisecond's entries.
        assert await ids(before=(T0 + DAY, "aud_2")) == ["aud_1"]
        await archive.audit_add([{**entries[0], "id": "aud_0"}, {**entries[0], "id": "aud_9"}])
        assert await ids(before=(T0, "aud_1")) == ["aud_0"]
        assert await ids(before=(T0 + 1, "aud_")) == ["aud_9", "aud_1", "aud_0"]
        # Newer than a place: the oldest of them cut, newest first.
        assert await ids(after=(T0, "aud_0"), limit=2) == ["aud_9", "aud_1"]
        assert await ids(after=(T0, "aud_9")) == ["aud_3", "aud_2"]
        assert await ids(after=(T0, "aud_1"), before=(T0 + 2 * DAY, "aud_3")) == ["aud_2", "aud_9"]
        assert (await archive.audit_search(AuditQuery(staff="bo")))[0] == entries[1]
        assert await archive.purge(T0 + DAY) >= 1
        assert await ids() == ["aud_3", "aud_2"]
    finally:
        await archive.close()


def archive_env(database_url: str, redis_url: str) -> dict[str, str]:
    return {
        "PAYLIVE_DATABASE_URL": database_url,
        "PAYLIVE_REDIS_URL": redis_url,
        "PAYLIVE_REDIS_RETENTION_MS": "1000",
        # The tests count each paid session's events (two): a charge must not race the
        # one-second attempt timeout of FAST, which a busy machine once let interrupt
        # it (eight events for three sessions).
        "PAYLIVE_ATTEMPT_TIMEOUT_MS": "15000",
    }


def redis_has(server: redisproc.RedisProc, session_id: str) -> bool:
    return redisproc.command(server.port, "EXISTS", f"paylive:{{{session_id}}}:s") != b":0\r\n"


async def finished(http: httpx.AsyncClient, order: str) -> str:
    session = await create(http, order_id=order)
    pay = {"payment_method": {"card": "4242424242424242"}}
    reply = await http.post(f"/api/sessions/{session['id']}/attempts", json=pay, headers=merchant())
    assert reply.status_code == 202

    async def paid() -> bool:
        got = await http.get(f"/api/sessions/{session['id']}", headers=merchant())
        return bool(got.json()["status"] == "succeeded")

    await until(paid, timeout=15.0)
    return str(session["id"])


async def test_found_through_the_archive_after_redis_forgot(
    db: Database, fresh_redis: redisproc.RedisProc
) -> None:
    with Server(archive_env(db.url, fresh_redis.url)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            session_id = await finished(http, "order-arch-1")
            await until(lambda: not redis_has(fresh_redis, session_id), timeout=15.0)
            reply = await http.get(f"/api/sessions/{session_id}", headers=merchant())
            assert reply.status_code == 200, reply.text
            assert reply.json()["status"] == "succeeded" and reply.json()["id"] == session_id
            found = await http.get("/api/admin/search?order_id=order-arch-1", headers=admin())
            assert [s["id"] for s in found.json()["sessions"]] == [session_id]
            events = (await http.get("/api/events?after=0", headers=merchant())).json()["events"]
            assert [e["type"] for e in events if e["session"]["id"] == session_id] == [
                "session.succeeded"
            ]
            missing = await http.get("/api/sessions/ps_never", headers=merchant())
            assert missing.status_code == 404
    rows = db.fetch(
        "SELECT seq, type FROM paylive_session_events WHERE session_id = $1", session_id
    )
    assert sorted((r["seq"], r["type"]) for r in rows) == [(1, "state"), (2, "state")]


async def test_what_changes_after_the_last_merchant_event_reaches_the_archive(
    db: Database, fresh_redis: redisproc.RedisProc
) -> None:
    # The outcome receipt (protocol 10) makes no merchant event by default: the archive
    # kept the session as its session.succeeded carried it, without outcome_seen_at.
    with Server(archive_env(db.url, fresh_redis.url)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            session_id = await finished(http, "order-arch-seen")
            seen = await http.post(
                f"/api/sessions/{session_id}/seen", json={"status": "succeeded"}, headers=merchant()
            )
            assert seen.status_code == 200, seen.text
            seen_at = seen.json()["outcome_seen_at"]
            assert seen_at is not None
            await until(lambda: not redis_has(fresh_redis, session_id), timeout=15.0)
            reply = await http.get(f"/api/sessions/{session_id}", headers=merchant())
            assert reply.status_code == 200, reply.text
            assert (reply.json()["outcome_seen_at"], reply.json()["seq"]) == (seen_at, 3)
            found = await http.get(f"/api/admin/search?id={session_id}", headers=admin())
            assert [s["outcome_seen_at"] for s in found.json()["sessions"]] == [seen_at]
            events = (await http.get("/api/events?after=0", headers=merchant())).json()
            assert [e["type"] for e in events["events"] if e["session"]["id"] == session_id] == [
                "session.succeeded"
            ], "the events API lists merchant events only"
    rows = db.fetch(
        "SELECT seq, body FROM paylive_session_events WHERE session_id = $1 ORDER BY seq",
        session_id,
    )
    assert [r["seq"] for r in rows] == [1, 2, 3]
    assert '"outcome_seen"' in rows[-1]["body"]
    assert db.fetch("SELECT count(*) FROM paylive_merchant_events")[0][0] == 1


async def test_written_while_postgres_is_unreachable_and_caught_up_after(
    db: Database, fresh_redis: redisproc.RedisProc
) -> None:
    proxy = TcpProxy(postgres.PORT).start()
    try:
        with Server(archive_env(db.url_via(proxy.port), fresh_redis.url)) as server:
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                await until(
                    lambda: db.fetch("SELECT to_regclass('paylive_sessions')")[0][0], timeout=15.0
                )
                proxy.stop()  # PostgreSQL is gone, as far as paylive can tell
                ids = [await finished(http, f"order-outage-{i}") for i in range(3)]
                # Redis forgets them while the archive cannot be written...
                await until(lambda: not any(redis_has(fresh_redis, i) for i in ids), timeout=15.0)
                reply = await http.get(f"/api/sessions/{ids[0]}", headers=merchant())
                assert reply.status_code == 503
                assert reply.json()["error"]["code"] == "archive_unavailable"
                # PostgreSQL's own words (hosts, ports, SQL) stay in the server's log.
                message = reply.json()["error"]["message"]
                assert message == "the archive cannot be read now; retry shortly", message
                # The staff reads that reach the archive say so too; the audit trail's
                # answered 500 (found in a review, 2026-12-07).
                for path in (
                    "/api/admin/audit",
                    "/api/admin/search?status=succeeded",
                    f"/api/admin/sessions/{ids[0]}/events",
                ):
                    reply = await http.get(path, headers=admin())
                    assert reply.status_code == 503, (path, reply.status_code, reply.text)
                    assert reply.json()["error"]["code"] == "archive_unavailable"
                # ...but the events log keeps what the archive has not taken yet. (Read
                # from where the log starts: from 0 the archive is asked for what is
                # below it, as with any log that was trimmed or started anew.)
                # (RESP: *2, $n, the id, $n, its cursor.)
                first = redisproc.command(
                    fresh_redis.port, "ZRANGE", "paylive:{_global}:log", "0", "0", "WITHSCORES"
                ).split(b"\r\n")[4]
                reply = await http.get(f"/api/events?after={int(first) - 1}", headers=merchant())
                events = reply.json()["events"]
                assert {e["session"]["id"] for e in events} >= set(ids)
                assert db.fetch("SELECT count(*) FROM paylive_sessions")[0][0] == 0

                proxy.start()  # back: the archive catches up, nothing lost

                async def archived() -> bool:
                    replies = [
                        await http.get(f"/api/sessions/{i}", headers=merchant()) for i in ids
                    ]
                    return all(r.status_code == 200 for r in replies)

                await until(archived, timeout=15.0)
    finally:
        proxy.stop()
    rows = db.fetch("SELECT id, status FROM paylive_sessions ORDER BY id")
    assert sorted(r["id"] for r in rows) == sorted(ids)
    assert {r["status"] for r in rows} == {"succeeded"}
    assert db.fetch("SELECT count(*) FROM paylive_session_events")[0][0] == 2 * len(ids)
    assert db.fetch("SELECT count(*) FROM paylive_merchant_events")[0][0] == len(ids)


async def test_a_session_row_is_its_newest_copy_whatever_order_copies_are_written(
    db: Database,
) -> None:
    history, messages = cancelled_session("ps_copies", "order-copies", T0)
    [event] = merchant_events(False, messages)
    public = event.session
    seen = {**public, "seq": public["seq"] + 1, "outcome_seen_at": T0 + 9}

    def snapshot(session: dict[str, Any], version: int) -> bytes:
        staff = {"effects": [], "review": None, "audit": [{"id": f"aud_{version}"}]}
        return snapshot_record(session, staff, version, history)

    engine = MemoryEngine(Settings().engine)
    base = await engine.log_first() - 1
    # Newest first: the outcome receipt's snapshot, then copies older than it (the
    # merchant event of the seq before; a snapshot of the same seq, an audit entry
    # before, of an earlier version).
    await engine.log_append(
        [
            ("snap_ps_copies_9", T0 + 9, snapshot(seen, 9)),
            (event.id, event.created, log_record(event.body(), history)),
            ("snap_ps_copies_8", T0 + 8, snapshot(seen, 8)),
        ]
    )
    archive = open_archive(db.url)
    try:
        await archive.start()
        assert await archive.follow(lambda after: engine.log_read(after, 1)) == base + 1
        assert await archive.follow(lambda after: engine.log_read(after, 5)) == base + 3
        assert (await archive.session("ps_copies"))["outcome_seen_at"] == T0 + 9
        public_now, staff = await archive.staff_session("ps_copies") or ({}, None)
        assert public_now["seq"] == seen["seq"] and staff is not None
        assert staff["audit"] == [{"id": "aud_9"}]
        # Written again (a worker that died before moving the mark): the same row.
        await engine.log_append([("snap_ps_copies_8b", T0 + 8, snapshot(seen, 8))])
        await archive.follow(lambda after: engine.log_read(after, 5))
        assert (await archive.staff_session("ps_copies") or ({}, {}))[1] == staff
    finally:
        await archive.close()
    [row] = db.fetch("SELECT seq, version FROM paylive_sessions")
    assert (row["seq"], row["version"]) == (seen["seq"], 9)
    cursors = [r["cursor"] for r in db.fetch("SELECT cursor FROM paylive_merchant_events")]
    assert cursors == [base + 2]


async def test_a_start_waits_for_the_migrations_lock_only_so_long(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holding the migrations' lock cannot hang a start for ever."""
    import asyncpg

    from paylive.archive import schema

    monkeypatch.setattr(schema, "MIGRATION_LOCK_WAIT_S", 1)
    holder = await asyncpg.connect(db.url)
    starter = await asyncpg.connect(db.url)
    try:
        await holder.execute("SELECT pg_advisory_lock($1)", schema.MIGRATION_LOCK)
        started = time.monotonic()
        with pytest.raises(schema.MigrationLockTimeout):
            await schema.migrate(starter)
        assert time.monotonic() - started < 5
        await holder.execute("SELECT pg_advisory_unlock($1)", schema.MIGRATION_LOCK)
        assert await schema.migrate(starter), "once the lock is free the start migrates"
        assert await starter.fetchval("SHOW lock_timeout") == "0", "the wait is not kept"
    finally:
        await holder.close()
        await starter.close()


async def _append(engine: MemoryEngine, session_id: str, at: int) -> None:
    history, messages = cancelled_session(session_id, "order-x", at)
    [event] = merchant_events(False, messages)
    await engine.log_append([(event.id, event.created, log_record(event.body(), history))])


async def test_events_after_a_lost_log_reach_the_archive_after_a_full_purge(
    db: Database,
) -> None:
    """An engine that lost its log was seeded from the highest cursor the archive still
    held: once its purge took every merchant event (a quiet shop past
    PAYLIVE_ARCHIVE_DAYS), that was 0, the new log gave cursors at or below the mark,
    and the follower, which reads past the mark, never took them (found in a review,
    2026-12-07)."""
    settings = Settings()
    now = [T0]
    archive = open_archive(db.url)
    try:
        await archive.start()
        first = MemoryEngine(settings.engine)
        for i in range(3):
            await _append(first, f"ps_old{i}", T0 + i)
        retention = Retention(settings.archive, first, archive, lambda: now[0])
        await retention.follow()
        assert await archive.mark() == await first.log_first() + 2
        # Long quiet: everything archived is past PAYLIVE_ARCHIVE_DAYS and purged.
        now[0] = T0 + (settings.archive.archive_days + 1) * DAY_MS
        await retention.housekeeping()
        assert db.fetch("SELECT count(*) FROM paylive_merchant_events")[0][0] == 0

        # The engine loses its log (a new Redis, a restarted memory worker).
        second = MemoryEngine(settings.engine)
        retention = Retention(settings.archive, second, archive, lambda: now[0])
        await retention.follow()  # seeds the new log
        await _append(second, "ps_new", now[0])
        for _ in range(3):
            await retention.follow()
        assert await archive.session("ps_new") is not None, (
            "event logged after the engine lost its log never reached the archive; "
            f"log cursors {[c for c, _ in await second.log_read(0, 10)]}, "
            f"archive mark {await archive.mark()}"
        )
    finally:
        await archive.close()


async def test_events_after_redis_restarts_empty_reach_the_archive(
    db: Database, redis: redisproc.RedisProc
) -> None:
    """A Redis restarted without persistence while the worker runs (docs/operations.md:
    it forgets sessions in flight) starts its log's cursors again at 1. The follower
    seeded the log once per process, so every later event got a cursor at or below the
    archive's mark and was never archived; it now seeds it every round (events logged
    between the restart and the next round, 200 ms at most, are still lost to it)."""
    from paylive.engine import create_engine
    from paylive.settings import load_settings

    settings = load_settings(
        {"PAYLIVE_REDIS_URL": redis.url, "PAYLIVE_SECRET": "test-signing-secret-0123456789"}
    )
    engine = create_engine(settings)
    await engine.start()
    archive = open_archive(db.url)
    try:
        await archive.start()
        retention = Retention(settings.archive, engine, archive, lambda: T0)
        for i in range(3):
            await _append(engine, f"ps_before{i}", T0 + i)
        await retention.follow()
        assert await archive.mark() == await engine.log_first() + 2
        redis.flushall()  # what a restart without appendonly leaves
        await retention.follow()  # its next round
        await _append(engine, "ps_after", T0 + 10)
        for _ in range(3):
            await retention.follow()
        assert await archive.session("ps_after") is not None, (
            f"log cursors {[c for c, _ in await engine.log_read(0, 10)]}, "
            f"archive mark {await archive.mark()}"
        )
    finally:
        await archive.close()
        await engine.close()


async def test_calls_at_once_before_the_archive_is_reached_make_one_pool(db: Database) -> None:
    """With PostgreSQL down at start, the follower, the housekeeping, the audit catch-up
    and requests all find no pool and each made one when it came back: every pool but
    the last one kept was never closed, its connections held until the process ended
    (found in a review, 2026-12-07)."""
    import asyncio

    archive = open_archive(db.url)
    try:
        await asyncio.gather(*(archive.mark() for _ in range(6)))
    finally:
        await archive.close()
    held = db.fetch(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
        db.name,
    )[0][0]
    assert held == 0, f"{held} connections left open by pools no one closes"


async def test_a_page_of_events_skips_none_that_a_trim_moves_to_the_archive_meanwhile(
    db: Database,
) -> None:
    """The events API read where the engine's log starts, then the archive below it,
    then the engine's log after what the archive gave: another worker's housekeeping
    trimming the log in between (entries the archive holds) left the page without them,
    and ``next`` past them, so the shop never saw those events (found in a review,
    2026-12-07)."""
    import asyncio

    from paylive.service.reads import Reads

    settings = Settings()
    engine = MemoryEngine(settings.engine)
    base = await engine.log_first() - 1
    for i in range(10):
        await _append(engine, f"ps_page{i}", T0 + i)
    archive = open_archive(db.url)
    try:
        await archive.start()
        assert await archive.follow(lambda after: engine.log_read(after, 100)) == base + 10
        # (Each event is created 2 ms after its session.)
        await engine.log_trim(T0 + 6, base + 10, 100)  # the log now starts at its 5th
        reads = Reads(settings.reads, engine, lambda: T0, archive)

        async def trim() -> None:  # another worker's housekeeping, while the page is read
            await engine.log_trim(T0 + 9, base + 10, 100)

        page, _ = await asyncio.gather(reads.events(0, 8), trim())
        assert await engine.log_first() == base + 8, "the trim ran while the page was read"
        assert [e["cursor"] - base for e in page.events] == [1, 2, 3, 4, 5, 6, 7, 8]
        assert page.next == base + 8
    finally:
        await archive.close()


async def test_a_database_that_refuses_writes_is_tried_with_backoff_and_said_once(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL that answers and refuses every write (a failover left the archive on a
    replica: SQLSTATE 25006) was tried again every poll, each time a traceback, where
    an unreachable one is tried with backoff and said once (found in a review,
    2026-12-08)."""
    settings = Settings()
    poll = settings.archive.archive_poll_ms
    now = [T0]
    archive = open_archive(db.url)
    engine = MemoryEngine(settings.engine)
    try:
        await archive.start()
        await _append(engine, "ps_ro0", T0)
        [(cursor, _)] = await engine.log_read(0, 10)
        retention = Retention(settings.archive, engine, archive, lambda: now[0])
        db.read_only(True)
        caplog.set_level(logging.INFO, logger="paylive")
        tries = 0
        for _ in range(50):  # 10 s of polls
            try:
                await retention.follow()
            except Exception:  # a try: it reached PostgreSQL (what a skip does not)
                tries += 1
            now[0] += poll
        said = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert 3 <= tries <= 10, f"{tries} tries in 50 polls: no backoff"
        assert any(
            "ReadOnlySQLTransactionError" in r.getMessage() and "25006" in r.getMessage()
            for r in said
        ), [r.getMessage() for r in said]
        assert len(said) <= 2 and not any(r.exc_info for r in said), [r.getMessage() for r in said]
        status = retention.status()
        assert status is not None and not status["writing"], status
        assert (status["error"], status["sqlstate"]) == ("ReadOnlySQLTransactionError", "25006")
        assert status["since"] is not None and T0 <= status["since"] < now[0]

        caplog.clear()
        db.read_only(False)  # the primary is back: caught up at the next try
        for _ in range(5):
            now[0] += 5_000
            try:
                await retention.follow()
                break
            except Exception:
                pass
        assert await archive.mark() == cursor
        assert await archive.session("ps_ro0") is not None
        assert retention.status() == {
            "writing": True,
            "error": None,
            "sqlstate": None,
            "since": None,
        }
        # The cut connections may fail one try first (unreachable: a change, said).
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(said) <= 2 and "writing again" in said[-1], said
    finally:
        await archive.close()


async def test_a_start_on_a_read_only_database_goes_on_without_the_archive(db: Database) -> None:
    """The migrations' CREATE TABLE IF NOT EXISTS is refused on a read-only replica
    (25006) even with every table there: the start raised it and the worker did not
    start, where PostgreSQL down only delays the archive."""
    from paylive.archive import ArchiveRefused

    db.read_only(True)
    archive = open_archive(db.url)
    try:
        await archive.start()
        with pytest.raises(ArchiveRefused) as refused:
            await archive.mark()
        assert refused.value.sqlstate == "25006"
        db.read_only(False)
        assert await archive.mark() == 0, "the next call migrates and answers"
    finally:
        await archive.close()


def metric(text: str, name: str) -> float | None:
    """The value of the sample ``name`` (with its labels, if any) in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_a_database_refusing_writes_is_reported_and_caught_up_after(
    db: Database, fresh_redis: redisproc.RedisProc
) -> None:
    """A real server whose archive is left on a read-only database: one log line with
    the error's class and SQLSTATE rather than a traceback every
    PAYLIVE_ARCHIVE_POLL_MS, /readyz's body and the metrics say the archive fails (the
    worker stays ready: the engine keeps what the archive owes), and the archive catches
    up once the database takes writes again."""
    env = {**archive_env(db.url, fresh_redis.url), "PAYLIVE_ARCHIVE_POLL_MS": "50"}
    with Server(env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            await until(
                lambda: db.fetch("SELECT to_regclass('paylive_sessions')")[0][0], timeout=15.0
            )
            db.read_only(True)
            ids = [await finished(http, f"order-ro-{i}") for i in range(2)]

            async def reported() -> Any:
                body = (await http.get("/readyz")).json()
                return body.get("archive", {}).get("sqlstate") == "25006" and body

            try:
                body = await until(reported, timeout=15.0)
            except AssertionError:
                raise AssertionError(
                    "/readyz never said the archive fails; the server logged "
                    f"{server.log().count('Traceback')} tracebacks meanwhile"
                ) from None
            assert body["ready"] is True and body["archive"]["writing"] is False, body
            assert body["archive"]["error"] == "ReadOnlySQLTransactionError", body

            async def metrics() -> str:
                return (await http.get("/metrics")).text

            assert metric(await metrics(), "paylive_archive_failing") == 1.0

            async def tried(times: int) -> bool:
                got = metric(await metrics(), 'paylive_archive_errors_total{sqlstate_class="25"}')
                return got is not None and got >= times

            # Several tries (each would have been a traceback), then the log read.
            await until(lambda: tried(4), timeout=15.0)
            log = server.log()
            assert log.count("Traceback") == 0, log[-3000:]
            lines = [line for line in log.splitlines() if "ReadOnlySQLTransaction" in line]
            assert len(lines) == 1 and "25006" in lines[0], lines

            db.read_only(False)

            def archived() -> bool:
                rows = db.fetch("SELECT id FROM paylive_sessions WHERE id = ANY($1)", ids)
                return len(rows) == len(ids)

            await until(archived, timeout=15.0)
            await until(lambda: reported_writing(http), timeout=15.0)
            ready = (await http.get("/readyz")).json()["archive"]
            assert ready == {"writing": True, "error": None, "sqlstate": None, "since": None}
            assert metric(await metrics(), "paylive_archive_failing") == 0.0
            assert "writing again" in server.log()


async def reported_writing(http: httpx.AsyncClient) -> bool:
    return bool((await http.get("/readyz")).json().get("archive", {}).get("writing"))


async def test_a_shop_past_the_archive_gets_every_event_after_redis_restarts_empty(
    db: Database, redis: redisproc.RedisProc
) -> None:
    """A Redis restarted empty (no persistence, or a replica that lost the tail) seeded
    its log's counter from the archive's mark, so the events it had listed past the mark
    lost their cursors and new events were given them again: a shop that had read up to
    such a cursor asked after it and never saw the new events below it, outcomes that
    happened after the restart (found in a review, 2026-12-08)."""
    from paylive.engine import create_engine
    from paylive.service.reads import Reads
    from paylive.settings import load_settings

    settings = load_settings(
        {"PAYLIVE_REDIS_URL": redis.url, "PAYLIVE_SECRET": "test-signing-secret-0123456789"}
    )
    redis.flushall()
    engine = create_engine(settings)
    await engine.start()
    archive = open_archive(db.url)
    try:
        await archive.start()
        retention = Retention(settings.archive, engine, archive, lambda: T0)
        reads = Reads(settings.reads, engine, lambda: T0, archive)
        for i in range(3):
            await _append(engine, f"ps_kept{i}", T0 + i)
        await retention.follow()
        mark = await archive.mark()
        for i in range(3):  # listed, not yet archived
            await _append(engine, f"ps_gone{i}", T0 + 10 + i)
        page = await reads.events(0, 100)
        assert len(page.events) == 6 and page.next > mark
        shop_cursor = page.next

        redis.flushall()  # what a restart without appendonly leaves
        await retention.follow()  # its next round seeds the new log
        for i in range(3):
            await _append(engine, f"ps_new{i}", T0 + 20 + i)
        await retention.follow()

        seen = [e["session"]["id"] for e in (await reads.events(shop_cursor, 100)).events]
        cursors = [c for c, _ in await engine.log_read(0, 100)]
        assert seen == ["ps_new0", "ps_new1", "ps_new2"], (
            f"the shop read up to {shop_cursor} (archive mark {mark}); after the restart "
            f"the log gave {cursors} and the shop's next page listed {seen}"
        )
    finally:
        await archive.close()
        await engine.close()


async def test_an_engine_outage_in_the_follow_keeps_the_archives_connection(db: Database) -> None:
    """The follow reads the engine's log inside its PostgreSQL transaction: with Redis
    down, each poll's EngineUnavailable (not PostgreSQL's failure: its connection is
    fine) terminated the pool's connection, and every poll of the outage opened a new
    PostgreSQL backend (found in a review, 2026-12-08)."""
    from paylive.engine.base import EngineUnavailable

    def backends() -> set[int]:
        rows = db.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            db.name,
        )
        return {row[0] for row in rows}

    async def read(mark: int) -> list[tuple[int, bytes]]:
        raise EngineUnavailable("Redis is unavailable")

    archive = open_archive(db.url)
    try:
        await archive.mark()
        before = backends()
        assert len(before) == 1, before
        for _ in range(3):
            with pytest.raises(EngineUnavailable):
                await archive.follow(read)
        await archive.mark()
        assert backends() == before, "a connection let go for the engine's outage"
    finally:
        await archive.close()
