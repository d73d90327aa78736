"""The archive in PostgreSQL: sessions, their durable events and the merchant events log.

The log also holds snapshots (``core.merchant.snapshot_record``): an ended session's
state and history after a change that made no merchant event. A session's row is
whichever copy is newest by (``seq``, ``version``), from a merchant event (version 0)
or a snapshot, whatever order they are written in.

It follows the engine's events log: ``follow`` reads what the log holds after the
archive's mark and writes it in one transaction that also moves the mark, so a batch
is archived entirely or not at all, and a worker that dies mid-batch leaves the next
one to write it again (every insert is idempotent). The engine keeps log records the
archive has not reached yet, so PostgreSQL being down loses nothing: the archive
catches up when it is back.

Every call raises ``ArchiveUnavailable`` when PostgreSQL cannot be reached, and
``ArchiveRefused`` (one of them) when it answers with an error (a read-only replica,
permission denied, a full disk, a timeout); the server goes on without it and tries
again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import asyncpg

from ..core.merchant import is_snapshot, read_log_record, read_snapshot
from .base import ArchiveRefused, ArchiveUnavailable, AuditQuery, SessionQuery
from .schema import migrate, pending

log = logging.getLogger("paylive.archive")

# Held for one follow transaction, so that one worker at a time writes a batch.
FOLLOW_LOCK = 0x7061796C697666

_UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)

LogRows = Sequence[tuple[int, bytes]]


# PostgreSQL's errors that say the database cannot serve now, whatever the SQL: the
# classes of a lost connection (08), a transaction it will not take (25: a read-only
# replica), a rollback (40: serialization, deadlock), resources (53: a full disk),
# limits (54), an object's state (55: a lock not available), an operator (57: a
# statement timeout, a shutdown), the system (58) and its internal errors (XX); and a
# privilege taken away (42501). The rest (a syntax error, an unknown column, bad data,
# a constraint) would be a defect of paylive's own SQL: left loud, never backed off.
_OPERATIONAL_CLASSES = frozenset({"08", "25", "40", "53", "54", "55", "57", "58", "XX"})
_OPERATIONAL_STATES = frozenset({"42501"})


def _failed(exc: BaseException) -> ArchiveUnavailable | None:
    """What a call raises for ``exc`` (one of ``_UNAVAILABLE`` or PostgreSQL's error);
    None for an error of paylive's own SQL, raised as it is."""
    error, sqlstate = type(exc).__name__, getattr(exc, "sqlstate", None)
    if isinstance(exc, _UNAVAILABLE):
        return ArchiveUnavailable(f"PostgreSQL is unavailable: {exc}", error, sqlstate)
    state = sqlstate or ""
    if state[:2] in _OPERATIONAL_CLASSES or state in _OPERATIONAL_STATES:
        return ArchiveRefused(f"PostgreSQL refused it: {exc}", error, sqlstate)
    return None


def _raise_failed(exc: BaseException) -> NoReturn:
    failed = _failed(exc)
    if failed is None:
        raise exc
    raise failed from exc


def _holdable(*values: object) -> bool:
    """Whether every text value could be in a row: PostgreSQL's text cannot hold NUL, so
    a value with one (a client's id, a query's filter) matches nothing, where asking
    would be an error from PostgreSQL (and a 500 for the client)."""
    return not any(isinstance(value, str) and "\x00" in value for value in values)


class Archive:
    def __init__(self, dsn: str, timeout_s: float = 5.0, pool_size: int = 4) -> None:
        self._dsn = dsn
        self._timeout = timeout_s
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        # One connect at a time: with PostgreSQL down at start, every loop and request
        # finds no pool, and each would make one when it is back, all but the last kept
        # never closed (up to ``pool_size`` connections each, held until the process ends).
        self._connecting = asyncio.Lock()

    async def _connect(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._connecting:
            if self._pool is None:
                self._pool = await self._new_pool()
        return self._pool

    async def _new_pool(self) -> asyncpg.Pool:
        try:
            conn = await asyncpg.connect(self._dsn, timeout=self._timeout)
            try:
                applied = await migrate(conn)
            finally:
                await conn.close()
            if applied:
                log.info("archive: applied migrations %s", ", ".join(applied))
            return await asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,
                command_timeout=self._timeout,
            )
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            # A read-only replica refuses even CREATE TABLE IF NOT EXISTS: a start on
            # one goes on without the archive, as a start with PostgreSQL down does.
            _raise_failed(exc)

    async def start(self) -> None:
        """Connect and migrate; PostgreSQL being down is not fatal (the loops retry)."""
        try:
            await self._connect()
        except ArchiveUnavailable as exc:
            log.warning("archive: %s; writes wait in the engine until it is back", exc)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        pool = await self._connect()
        try:
            async with pool.acquire(timeout=self._timeout) as conn:
                try:
                    return await work(conn)
                except BaseException as exc:
                    broken = (asyncio.CancelledError, asyncpg.exceptions.InternalClientError)
                    if isinstance(exc, broken) or _failed(exc) is not None:
                        # The connection is let go, not given back: one to a replica a
                        # failover left it on stays read-only for its life (the setting
                        # is its session's), one cut or cancelled mid-operation may be
                        # left in a state asyncpg refuses ("another operation is in
                        # progress"). The pool opens a fresh one for the next call. An
                        # error of our own (SQL, code, or the engine's outage while the
                        # follow reads its log) leaves it sound: it goes back.
                        conn.terminate()
                    raise
        except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
            _raise_failed(exc)

    # Writing ----------------------------------------------------------------

    async def follow(self, read: Callable[[int], Awaitable[LogRows]]) -> int:
        """Archive what ``read(mark)`` returns after the mark; return the new mark.

        ``read`` is the engine's log; it runs inside the transaction, under a lock, so
        two workers never write the same batch at once.
        """

        async def work(conn: asyncpg.Connection) -> int:
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", FOLLOW_LOCK):
                    return -1  # another worker is at it
                mark = int(
                    await conn.fetchval(
                        "SELECT cursor FROM paylive_archive_mark WHERE name = 'log' FOR UPDATE"
                    )
                )
                rows = await read(mark)
                if not rows:
                    return mark
                await _write(conn, rows)
                last = max(cursor for cursor, _ in rows)
                await conn.execute(
                    "UPDATE paylive_archive_mark SET cursor = $1 WHERE name = 'log'", last
                )
                return last

        return int(await self._run(work))

    async def mark(self) -> int:
        async def work(conn: asyncpg.Connection) -> int:
            return int(
                await conn.fetchval("SELECT cursor FROM paylive_archive_mark WHERE name = 'log'")
            )

        return int(await self._run(work))

    async def purge(self, before_ms: int, batch: int = 5_000) -> int:
        """Forget sessions (with their events) and merchant events older than ``before_ms``."""

        async def work(conn: asyncpg.Connection) -> int:
            sessions = await conn.execute(
                "DELETE FROM paylive_sessions WHERE id IN (SELECT id FROM paylive_sessions"
                " WHERE updated_at < $1 LIMIT $2)",
                before_ms,
                batch,
            )
            events = await conn.execute(
                "DELETE FROM paylive_merchant_events WHERE cursor IN (SELECT cursor FROM"
                " paylive_merchant_events WHERE created < $1 LIMIT $2)",
                before_ms,
                batch,
            )
            audit = await conn.execute(
                "DELETE FROM paylive_audit WHERE id IN (SELECT id FROM paylive_audit"
                " WHERE at < $1 LIMIT $2)",
                before_ms,
                batch,
            )
            return int(sessions.split()[-1]) + int(events.split()[-1]) + int(audit.split()[-1])

        return int(await self._run(work))

    # Reading ----------------------------------------------------------------

    async def session(self, session_id: str) -> dict[str, Any] | None:
        if not _holdable(session_id):
            return None

        async def work(conn: asyncpg.Connection) -> str | None:
            return await conn.fetchval(  # type: ignore[no-any-return]
                "SELECT body FROM paylive_sessions WHERE id = $1", session_id
            )

        body = await self._run(work)
        return None if body is None else json.loads(body)  # type: ignore[no-any-return]

    async def staff_session(
        self, session_id: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """The session's public view and what staff see besides (``effects``,
        ``review``, ``audit``; None when no snapshot of it was archived), or None."""
        if not _holdable(session_id):
            return None

        async def work(conn: asyncpg.Connection) -> Any:
            return await conn.fetchrow(
                "SELECT body, staff_body FROM paylive_sessions WHERE id = $1", session_id
            )

        row = await self._run(work)
        if row is None:
            return None
        staff = None if row["staff_body"] is None else json.loads(row["staff_body"])
        return json.loads(row["body"]), staff

    async def history(self, session_id: str) -> list[dict[str, Any]]:
        if not _holdable(session_id):
            return []

        async def work(conn: asyncpg.Connection) -> list[Any]:
            return await conn.fetch(  # type: ignore[no-any-return]
                "SELECT body FROM paylive_session_events WHERE session_id = $1 ORDER BY seq",
                session_id,
            )

        return [json.loads(row["body"]) for row in await self._run(work)]

    async def events(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        """Merchant events with a cursor above ``after``, in cursor order."""

        async def work(conn: asyncpg.Connection) -> list[Any]:
            return await conn.fetch(  # type: ignore[no-any-return]
                "SELECT cursor, body FROM paylive_merchant_events WHERE cursor > $1"
                " ORDER BY cursor LIMIT $2",
                after,
                limit,
            )

        return [(int(row["cursor"]), row["body"].encode()) for row in await self._run(work)]

    async def event(self, event_id: str) -> bytes | None:
        """One merchant event as it was posted."""
        if not _holdable(event_id):
            return None

        async def work(conn: asyncpg.Connection) -> str | None:
            return await conn.fetchval(  # type: ignore[no-any-return]
                "SELECT body FROM paylive_merchant_events WHERE id = $1", event_id
            )

        body = await self._run(work)
        return None if body is None else body.encode()  # type: ignore[no-any-return]

    async def search(self, query: SessionQuery) -> list[dict[str, Any]]:
        return await self._bodies(
            "paylive_sessions",
            (
                ("id", "=", query.session_id),
                ("order_id", "=", query.order_id),
                ("status", "=", query.status),
                ("created_at", ">=", query.created_from),
                ("created_at", "<", query.created_to),
            ),
            "created_at DESC, id DESC",
            query.limit,
        )

    async def _bodies(
        self,
        table: str,
        filters: Sequence[tuple[str, str, Any]],
        order: str,
        limit: int,
    ) -> list[dict[str, Any]]:
        """The ``body`` of each row of ``table`` that passes every filter
        (``column op value``) whose value is not None, in ``order``, at most ``limit``.
        Only values are parameters; the table, columns and order are this module's."""
        values = [
            v for _, _, value in filters for v in (value if isinstance(value, tuple) else (value,))
        ]
        if not _holdable(*values):
            return []
        where: list[str] = []
        args: list[Any] = []
        for column, op, value in filters:
            if isinstance(value, tuple):  # a row compared whole: (a, b) < ($1, $2)
                first = len(args) + 1
                args.extend(value)
                marks = ", ".join(f"${n}" for n in range(first, len(args) + 1))
                where.append(f"{column} {op} ({marks})")
            elif value is not None:
                args.append(value)
                where.append(f"{column} {op} ${len(args)}")
        args.append(limit)
        sql = (
            f"SELECT body FROM {table}"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY {order} LIMIT ${len(args)}"
        )

        async def work(conn: asyncpg.Connection) -> list[Any]:
            return await conn.fetch(sql, *args)  # type: ignore[no-any-return]

        return [json.loads(row["body"]) for row in await self._run(work)]

    # The audit trail ----------------------------------------------------------

    async def audit_add(self, entries: Sequence[dict[str, Any]]) -> None:
        """Write audit entries; an entry written before is left as it is."""
        rows = [
            (
                str(e["id"]),
                int(e["at"]),
                str(e["staff"]),
                str(e["action"]),
                e.get("session"),
                json.dumps(e, separators=(",", ":")),
            )
            for e in entries
        ]

        async def work(conn: asyncpg.Connection) -> None:
            await conn.executemany(
                "INSERT INTO paylive_audit (id, at, staff, action, session_id, body)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO NOTHING",
                rows,
            )

        await self._run(work)

    async def audit_search(self, query: AuditQuery) -> list[dict[str, Any]]:
        """The page ``query`` answers, newest first (read forwards: its oldest cut)."""
        found = await self._bodies(
            "paylive_audit",
            (
                ("session_id", "=", query.session_id),
                ("staff", "=", query.staff),
                ("at", ">=", query.at_from),
                ("at", "<", query.at_to),
                ("(at, id)", "<", query.before),
                ("(at, id)", ">", query.after),
            ),
            "at DESC, id DESC" if query.after is None else "at, id",
            query.limit,
        )
        return found if query.after is None else found[::-1]


async def _write(conn: asyncpg.Connection, rows: LogRows) -> None:
    """One batch of log records: merchant events, the sessions they carry (or a
    snapshot does), histories."""
    events: list[tuple[Any, ...]] = []
    # id -> (public view, version, what staff see besides or None)
    sessions: dict[str, tuple[dict[str, Any], int, dict[str, Any] | None]] = {}
    history: dict[tuple[str, int], tuple[Any, ...]] = {}
    for cursor, raw in rows:
        staff: dict[str, Any] | None = None
        version = 0
        if is_snapshot(raw):
            snapshot, held = read_snapshot(raw)
            session, version, staff = (
                snapshot["session"],
                int(snapshot["version"]),
                snapshot["staff"],
            )
        else:
            event, held = read_log_record(raw)
            session = event["session"]
            events.append(
                (
                    cursor,
                    event["id"],
                    session["id"],
                    event["type"],
                    event["created"],
                    json.dumps(event, separators=(",", ":"), ensure_ascii=False),
                )
            )
        known = sessions.get(session["id"])
        if known is None or (known[0]["seq"], known[1]) <= (session["seq"], version):
            kept = staff if staff is not None else (None if known is None else known[2])
            sessions[session["id"]] = (session, version, kept)
        for item in held:
            key = (session["id"], int(item["seq"]))
            history[key] = (
                key[0],
                key[1],
                item["type"],
                item["ts"],
                json.dumps(item, separators=(",", ":"), ensure_ascii=False),
            )
    # Newest by (seq, version): a merchant event's copy (version 0) never replaces a
    # snapshot of the same seq, nor a batch written late a newer copy. What staff see
    # is kept from the last snapshot until a newer one comes.
    await conn.executemany(
        "INSERT INTO paylive_sessions (id, order_id, status, amount, currency, needs_review,"
        " created_at, updated_at, seq, body, version, staff_body)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        " ON CONFLICT (id) DO UPDATE SET order_id = EXCLUDED.order_id,"
        " status = EXCLUDED.status, amount = EXCLUDED.amount, currency = EXCLUDED.currency,"
        " needs_review = EXCLUDED.needs_review, updated_at = EXCLUDED.updated_at,"
        " seq = EXCLUDED.seq, body = EXCLUDED.body, version = EXCLUDED.version,"
        " staff_body = COALESCE(EXCLUDED.staff_body, paylive_sessions.staff_body)"
        " WHERE (paylive_sessions.seq, paylive_sessions.version)"
        " <= (EXCLUDED.seq, EXCLUDED.version)",
        [
            (
                s["id"],
                s["order_id"],
                s["status"],
                s["amount"],
                s["currency"],
                bool(s["needs_review"]),
                s["created_at"],
                s["updated_at"],
                s["seq"],
                json.dumps(s, separators=(",", ":"), ensure_ascii=False),
                version,
                None
                if staff is None
                else json.dumps(staff, separators=(",", ":"), ensure_ascii=False),
            )
            for s, version, staff in sessions.values()
        ],
    )
    await conn.executemany(
        "INSERT INTO paylive_session_events (session_id, seq, type, ts, body)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        list(history.values()),
    )
    await conn.executemany(
        "INSERT INTO paylive_merchant_events (cursor, id, session_id, type, created, body)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        events,
    )


async def apply_migrations(dsn: str, timeout_s: float) -> list[str]:
    """``paylive migrate``: apply what the database lacks on one connection, as a
    start would; return the names applied. Raises ArchiveUnavailable."""
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
    except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
        # A wrong password or database name too: the URL is what is wrong.
        raise ArchiveUnavailable(f"PostgreSQL refused or did not answer: {exc}") from exc
    try:
        return await migrate(conn)
    finally:
        await conn.close()


async def pending_migrations(dsn: str, timeout_s: float) -> list[str]:
    """``paylive check``: reach the database and name the migrations it lacks."""
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
    except (*_UNAVAILABLE, asyncpg.PostgresError) as exc:
        # A wrong password or database name too: the URL is what is wrong.
        raise ArchiveUnavailable(f"PostgreSQL refused or did not answer: {exc}") from exc
    try:
        return await pending(conn)
    finally:
        await conn.close()
