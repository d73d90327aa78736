"""Versioned SQL migrations, shipped in the package and applied at start.

``migrations/NNNN_name.sql`` files run in order, each in its own transaction, and
each is recorded in ``paylive_migrations``; an advisory lock makes workers that start
together apply them once. A migration is never edited after release: a change is a
new file.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from .base import ArchiveUnavailable

# pg_advisory_lock key: "paylive" in ASCII, so it will not clash with a shop's own.
MIGRATION_LOCK = 0x7061796C697665
# How long a start waits for another process's migrations before it gives up.
MIGRATION_LOCK_WAIT_S = 60
LOCK_NOT_AVAILABLE = "55P03"


class MigrationLockTimeout(ArchiveUnavailable):
    """Another process held the migrations' lock for longer than the wait: the archive
    cannot be used yet (a start goes on without it and tries again later)."""


_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


def migrations() -> list[tuple[int, str, str]]:
    """(version, file name, SQL) of every shipped migration, in order."""
    folder = resources.files("paylive.archive") / "migrations"
    out = []
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            out.append((int(match.group(1)), entry.name, entry.read_text(encoding="utf-8")))
    out.sort()
    versions = [version for version, _, _ in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"two migrations share a version: {versions}")
    return out


async def migrate(conn: Any) -> list[str]:
    """Apply the migrations ``conn``'s database lacks; return the names applied."""
    applied: list[str] = []
    # Bounded: a process that died holding the lock on a connection PostgreSQL has not
    # yet dropped, or one stuck in a migration, must not hang every start for ever.
    await conn.execute(f"SET lock_timeout = '{MIGRATION_LOCK_WAIT_S}s'")
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    except Exception as exc:
        if getattr(exc, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            raise MigrationLockTimeout(
                f"another process has held the migrations' lock for {MIGRATION_LOCK_WAIT_S} s"
            ) from exc
        raise
    finally:
        await conn.execute("RESET lock_timeout")
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS paylive_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            row["version"] for row in await conn.fetch("SELECT version FROM paylive_migrations")
        }
        for version, name, sql in migrations():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO paylive_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    return applied


async def pending(conn: Any) -> list[str]:
    """The names of the shipped migrations ``conn``'s database lacks; changes nothing."""
    exists = await conn.fetchval("SELECT to_regclass('paylive_migrations') IS NOT NULL")
    done: set[int] = set()
    if exists:
        done = {
            row["version"] for row in await conn.fetch("SELECT version FROM paylive_migrations")
        }
    return [name for version, name, _ in migrations() if version not in done]
