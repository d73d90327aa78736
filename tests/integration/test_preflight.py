"""``paylive check`` and ``paylive migrate`` as an operator runs them: real Redis, a
real PostgreSQL database of the test's own, localstripe for Stripe."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import paylive.archive as paylive_archive

from ..support import redisproc
from ..support.localstripe import SECRET_KEY, WEBHOOK_SECRET, LocalStripe
from ..support.ports import free_port
from ..support.postgres import Database

BASE = {"PAYLIVE_SECRET": "preflight-secret-0123456789"}
# A Standard Webhooks secret: whsec_ and the base64 of 24 bytes.
SHOP_SECRET = "whsec_" + base64.b64encode(b"shop-webhook-secret-0123").decode()


def paylive(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PAYLIVE_")}
    return subprocess.run(
        [sys.executable, "-m", "paylive", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stripe_env(localstripe: LocalStripe, key: str = SECRET_KEY) -> dict[str, str]:
    return {
        "PAYLIVE_GATEWAY": "stripe",
        "PAYLIVE_STRIPE_SECRET_KEY": key,
        "PAYLIVE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PAYLIVE_STRIPE_API_BASE": localstripe.url,
    }


def test_redis_unreachable_exits_non_zero_naming_the_variable() -> None:
    done = paylive(
        "check",
        "--timeout",
        "1",
        env={**BASE, "PAYLIVE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    failed = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and "PAYLIVE_REDIS_URL" in failed[0], done.stdout


def test_a_worker_on_redis_that_cannot_bind_its_port_exits(redis: redisproc.RedisProc) -> None:
    # uvicorn binds after the app's start-up and, when it cannot, runs the shutdown and
    # exits. On Redis that shutdown once waited forever: redis-py swallowed the cancel
    # of a worker loop caught mid-command, so the process lived on, bound to nothing.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**BASE, "PAYLIVE_REDIS_URL": redis.url, "PAYLIVE_API_KEY": "k" * 24}
        done = paylive("serve", "--port", str(port), env=env, timeout=30)
    assert done.returncode != 0, done.stdout + done.stderr
    assert "address already in use" in done.stdout + done.stderr
    assert "Application shutdown complete" in done.stdout + done.stderr


def test_a_good_configuration_exits_0(
    redis: redisproc.RedisProc, db: Database, localstripe: LocalStripe, tmp_path: Path
) -> None:
    # The database URL as a mounted secret, to check the _FILE path end to end.
    url_file = tmp_path / "database_url"
    url_file.write_text(db.url + "\n")
    env = {
        **BASE,
        "PAYLIVE_REDIS_URL": redis.url,
        "PAYLIVE_DATABASE_URL_FILE": str(url_file),
        **stripe_env(localstripe),
    }
    done = paylive("check", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for name in ("settings", "redis", "postgresql", "stripe"):
        assert any(line.startswith(f"ok    {name}:") for line in lines), done.stdout
    assert "migration(s) to apply" in done.stdout  # a new database: nothing applied yet
    # check changed nothing: the database is still empty.
    assert db.fetch("SELECT to_regclass('paylive_migrations') IS NULL")[0][0]


@pytest.mark.parametrize("read_only", ["yes", "no"])
def test_a_redis_that_refuses_writes_fails_the_check(tmp_path: Path, read_only: str) -> None:
    """A replica answers PING and refuses every save (as after a failover that demoted
    it): ``/readyz`` says so with ``engine_writable``, and so must the check. One with
    ``replica-read-only no`` takes the probe's write, and the saves replication would
    overwrite: it fails the check all the same."""
    replica = redisproc.start_redis(tmp_path / "replica")
    primary = redisproc.start_redis(tmp_path / "primary")
    try:
        env = {**BASE, "PAYLIVE_REDIS_URL": replica.url}
        done = paylive("check", env=env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "ok    redis:" in done.stdout and "takes writes" in done.stdout, done.stdout

        said = redisproc.command(replica.port, "CONFIG", "SET", "replica-read-only", read_only)
        assert said.startswith(b"+OK"), said
        said = redisproc.command(replica.port, "REPLICAOF", "127.0.0.1", str(primary.port))
        assert said.startswith(b"+OK"), said
        # Until it has loaded the primary's data it answers LOADING (unreachable, for the
        # check); once linked it answers, and refuses writes.
        deadline = time.monotonic() + 10
        while b"master_link_status:up" not in redisproc.command(
            replica.port, "INFO", "replication"
        ):
            assert time.monotonic() < deadline, "the replica never linked to its primary"
            time.sleep(0.05)
        done = paylive("check", env=env)
        assert done.returncode == 1, done.stdout + done.stderr
        [failed] = [line for line in done.stdout.splitlines() if line.startswith("FAIL")]
        assert failed.startswith("FAIL  redis: PAYLIVE_REDIS_URL: "), done.stdout
        assert "answers PING and refuses writes" in failed, failed
        assert "replica" in failed, failed
    finally:
        replica.stop()
        primary.stop()


def test_a_key_the_provider_refuses_is_named(localstripe: LocalStripe) -> None:
    # localstripe answers 401 to anything but an sk_ key, as Stripe does to a revoked one.
    done = paylive("check", env={**BASE, **stripe_env(localstripe, "rk_test_revoked0123")})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  stripe: PAYLIVE_STRIPE_SECRET_KEY" in done.stdout, done.stdout


def test_a_bad_setting_exits_2_naming_it() -> None:
    done = paylive("check", env={"PAYLIVE_MAX_ATTEMPTS": "many"})
    assert done.returncode == 2
    assert "PAYLIVE_MAX_ATTEMPTS" in done.stdout


def test_a_url_holding_a_password_is_never_printed_whole() -> None:
    """``paylive check`` runs in CI, whose logs many can read: a Redis URL refused for its
    scheme, a shop's webhook URL refused for its port, and one accepted (shown in the
    summary) are named without their password or token."""
    password = "hunter2-redis-pw"
    done = paylive(
        "check", env={**BASE, "PAYLIVE_REDIS_URL": f"redis-tls://:{password}@cache:6380/0"}
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PAYLIVE_REDIS_URL" in done.stdout and "cache:6380" in done.stdout, done.stdout
    assert password not in done.stdout + done.stderr, done.stdout
    hooks = {"PAYLIVE_MERCHANT_WEBHOOK_SECRET": SHOP_SECRET}
    url = f"https://shop:{password}@shop.example:99999/hooks"
    done = paylive("check", env={**BASE, **hooks, "PAYLIVE_MERCHANT_WEBHOOK_URL": url})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PAYLIVE_MERCHANT_WEBHOOK_URL" in done.stdout, done.stdout
    assert password not in done.stdout + done.stderr, done.stdout
    url = f"https://shop:{password}@shop.example/hooks?token=tok-{password}"
    done = paylive("check", env={**BASE, **hooks, "PAYLIVE_MERCHANT_WEBHOOK_URL": url})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "merchant webhooks to https://shop:***@shop.example/hooks" in done.stdout
    assert password not in done.stdout + done.stderr, done.stdout


MIGRATIONS = Path(paylive_archive.__file__).parent / "migrations"


def test_migrate_applies_the_migrations_once(db: Database) -> None:
    env = {"PAYLIVE_DATABASE_URL": db.url}
    done = paylive("migrate", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    shipped = sorted(p.name for p in MIGRATIONS.glob("*.sql"))
    assert len(shipped) >= 2, shipped
    assert f"applied {len(shipped)} migration(s): {', '.join(shipped)}" in done.stdout
    rows = db.fetch("SELECT version, name FROM paylive_migrations ORDER BY version")
    assert [r["name"] for r in rows] == shipped
    assert db.fetch("SELECT to_regclass('paylive_sessions') IS NOT NULL")[0][0]
    again = paylive("migrate", env=env)
    assert again.returncode == 0 and "up to date" in again.stdout, again.stdout
    checked = paylive("check", env={**BASE, **env})
    assert checked.returncode == 0 and "schema up to date" in checked.stdout, checked.stdout


def test_migrate_without_a_database_names_the_variable() -> None:
    done = paylive("migrate", env={})
    assert done.returncode == 2 and "PAYLIVE_DATABASE_URL" in done.stdout
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    done = paylive("migrate", "--timeout", "2", env={"PAYLIVE_DATABASE_URL": unreachable})
    assert done.returncode == 1 and "PAYLIVE_DATABASE_URL" in done.stdout, done.stdout
