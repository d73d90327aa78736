"""Fixtures of the integration tests: an HTTP client of the module's server, a fresh
PostgreSQL database, a fresh Redis, two workers sharing one Redis."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from ..support import postgres, redisproc, tls
from ..support.ports import free_port
from ..support.postgres import Database
from ..support.servers import Server


@pytest.fixture
async def http(server: Server, request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the module's ``server``; a module may set ``HTTP_TIMEOUT`` (s)."""
    timeout = getattr(request.module, "HTTP_TIMEOUT", 10)
    async with httpx.AsyncClient(
        base_url=server.url, timeout=timeout, verify=tls.CONTEXT
    ) as client:
        yield client


@pytest.fixture
def db() -> Iterator[Database]:
    """A database of the test's own, dropped after it."""
    if not postgres.reachable():
        if os.environ.get("PAYLIVE_REQUIRE_POSTGRES"):
            pytest.fail("no PostgreSQL on 127.0.0.1:5432 (PAYLIVE_REQUIRE_POSTGRES)")
        pytest.skip("no PostgreSQL on 127.0.0.1:5432 (.ci/run starts one)")
    with Database() as database:
        yield database


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[redisproc.RedisProc]:
    """A ``redis-server`` of the test's own (for tests that freeze it or count on it
    holding nothing of another test)."""
    if redisproc.REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH")
    proc = redisproc.start_redis(tmp_path / "redis")
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def pair(redis: redisproc.RedisProc) -> Iterator[tuple[Server, Server]]:
    """Two workers on one Redis; A's sandbox posts its webhooks to B. No test of the
    pair waits for an attempt to time out, and its payments must succeed: attempts wait
    10 s (at 1 s, a payment on a machine loaded to 11 once timed out, then succeeded late)."""
    port_b = free_port()
    patient = {"PAYLIVE_REDIS_URL": redis.url, "PAYLIVE_ATTEMPT_TIMEOUT_MS": "10000"}
    b = Server(patient, port=port_b)
    a = Server(
        {
            **patient,
            "PAYLIVE_SANDBOX_WEBHOOK_URL": f"http://127.0.0.1:{port_b}/webhooks/sandbox",
        }
    )
    with b, a:
        yield a, b
