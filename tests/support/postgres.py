"""A database of our own on the machine's PostgreSQL (127.0.0.1:5432, user postgres,
trust): created with a unique name per test run and dropped after it. Never anything
else on that server is touched."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import asyncpg

HOST, PORT, USER = "127.0.0.1", 5432, "postgres"
T = TypeVar("T")


def reachable(host: str = HOST, port: int = PORT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to the end on a loop of its own in another thread, so that the
    helpers work from sync and async tests alike."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result(timeout=30)


def _admin(sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(host=HOST, port=PORT, user=USER, database="postgres")
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    _sync(run())


class Database:
    """``with Database() as db: db.url``; ``db.url_via(port)`` reaches it through a proxy."""

    def __init__(self) -> None:
        self.name = f"paylive_test_{os.getpid()}_{secrets.token_hex(4)}"

    def url_via(self, port: int) -> str:
        return f"postgresql://{USER}@{HOST}:{port}/{self.name}"

    @property
    def url(self) -> str:
        return self.url_via(PORT)

    def create(self) -> Database:
        _admin(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        _admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        async def run() -> list[asyncpg.Record]:
            conn = await asyncpg.connect(self.url)
            try:
                return await conn.fetch(sql, *args)  # type: ignore[no-any-return]
            finally:
                await conn.close()

        return _sync(run())

    def read_only(self, on: bool) -> None:
        """Every write to the database refused (SQLSTATE 25006), as on the replica a
        failover can leave a client connected to, or taken again. The connections open
        to it are cut, so that the next ones have the setting (and a pool reconnects)."""
        change = "SET default_transaction_read_only = on" if on else "RESET ALL"
        _admin(f'ALTER DATABASE "{self.name}" {change}')
        _admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE datname = '{self.name}' AND pid <> pg_backend_pid()"
        )

    def __enter__(self) -> Database:
        return self.create()

    def __exit__(self, *exc: object) -> None:
        self.drop()
