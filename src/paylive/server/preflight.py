"""``paylive check`` and ``paylive migrate``: a configuration tried before it is deployed.

``check`` reads the settings as ``serve`` would, then reaches every service they name:
Redis (a PING, and a write: a replica answers the one and refuses the other),
PostgreSQL (a connection, and the migrations it lacks) and the provider (Stripe: one
cheap authenticated read). Each failure names the variable to
fix. ``migrate`` applies the archive's migrations on their own, so a deployment can
run them as a step before the new workers start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ..settings import Settings, SettingsError, load_settings
from ..telemetry.redaction import redact

# Exit codes: 0 all good, 1 a service failed, 2 the configuration itself is wrong.
OK, FAILED, BAD_CONFIG = 0, 1, 2


@dataclass(frozen=True)
class Outcome:
    name: str
    ok: bool
    detail: str
    variable: str | None = None  # the variable to look at when it failed

    def line(self) -> str:
        if self.ok:
            return f"ok    {self.name}: {self.detail}"
        return f"FAIL  {self.name}: {self.variable}: {self.detail}"


def shown(url: str) -> str:
    """``url`` without its password, for output that may end up in a CI log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))


async def check_redis(settings: Settings, timeout_s: float) -> Outcome:
    import redis.asyncio as aioredis

    from ..engine.redis.client import split_url

    assert settings.redis_url is not None
    url, _ = split_url(settings.redis_url)
    client = aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
    )
    try:
        async with asyncio.timeout(timeout_s):
            await client.ping()
    except Exception as exc:  # any failure here is the answer, named
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Outcome(
            "redis",
            False,
            f"{shown(settings.redis_url)} unreachable ({detail})",
            "PAYLIVE_REDIS_URL",
        )
    finally:
        await client.aclose()
    from ..runtime import engine_writable

    # A replica (a failover demoted it), or a primary out of memory with no eviction,
    # answers PING and refuses every save: serve would start and answer 503 to all.
    try:
        async with asyncio.timeout(timeout_s * 2):
            writable = await engine_writable(settings)
    except Exception as exc:  # any failure here is the answer, named
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return Outcome(
            "redis",
            False,
            f"{shown(settings.redis_url)} answers PING, and its write probe failed ({detail})",
            "PAYLIVE_REDIS_URL",
        )
    if not writable:
        return Outcome(
            "redis",
            False,
            f"{shown(settings.redis_url)} answers PING and refuses writes (a replica, or "
            "out of memory with no eviction, min-replicas-to-write unmet, a failed "
            "background save): every save would fail; point it at the primary",
            "PAYLIVE_REDIS_URL",
        )
    detail = f"{shown(settings.redis_url)} answers PING and takes writes"
    from .checks import redis_persistence_warning

    warning = await asyncio.to_thread(redis_persistence_warning, settings.redis_url, timeout_s)
    if warning:
        detail += f" (warning: {warning})"
    return Outcome("redis", True, detail)


async def check_database(settings: Settings, timeout_s: float) -> Outcome:
    assert settings.database_url is not None
    where = shown(settings.database_url)
    try:
        from ..archive.store import pending_migrations
    except ImportError:
        return Outcome(
            "postgresql",
            False,
            "the PostgreSQL driver is missing: pip install 'paylive[archive]'",
            "PAYLIVE_DATABASE_URL",
        )
    from ..archive.base import ArchiveUnavailable

    try:
        async with asyncio.timeout(timeout_s * 2):
            lacking = await pending_migrations(settings.database_url, timeout_s)
    except (ArchiveUnavailable, TimeoutError) as exc:
        return Outcome(
            "postgresql", False, f"{where}: {exc or 'no answer'}", "PAYLIVE_DATABASE_URL"
        )
    if lacking:
        todo = f"{len(lacking)} migration(s) to apply ({', '.join(lacking)}): `paylive migrate`"
        return Outcome("postgresql", True, f"{where} reached; {todo}, or at start")
    return Outcome("postgresql", True, f"{where} reached; schema up to date")


async def check_stripe(settings: Settings, timeout_s: float) -> Outcome:
    import stripe

    http = stripe.HTTPXClient(timeout=timeout_s)
    base = settings.stripe_api_base
    client = stripe.StripeClient(
        settings.stripe_secret_key,
        base_addresses={"api": base} if base else None,
        http_client=http,
        max_network_retries=0,
    )
    where = base or "Stripe"
    try:
        # The cheapest read the key must be allowed anyway: paylive lives on PaymentIntents.
        async with asyncio.timeout(timeout_s * 2):
            await client.v1.payment_intents.list_async(params={"limit": 1})
    except (stripe.AuthenticationError, stripe.PermissionError) as exc:
        return Outcome(
            "stripe",
            False,
            f"{where} refused the key ({exc.user_message or exc})",
            "PAYLIVE_STRIPE_SECRET_KEY",
        )
    except (stripe.APIConnectionError, TimeoutError) as exc:
        variable = "PAYLIVE_STRIPE_API_BASE" if base else "PAYLIVE_STRIPE_SECRET_KEY"
        return Outcome("stripe", False, f"{where} unreachable ({exc or 'no answer'})", variable)
    except stripe.StripeError as exc:
        return Outcome(
            "stripe", False, f"{where} answered an error ({exc})", "PAYLIVE_STRIPE_SECRET_KEY"
        )
    finally:
        await http.close_async()
    mode = "test" if settings.stripe_secret_key[3:8] == "test_" else "live"
    return Outcome("stripe", True, f"{where} accepts the key ({mode} mode)")


async def check_sandbox(settings: Settings, timeout_s: float) -> Outcome:
    # Built in: nothing to reach. Said so, so that a missing Stripe line is no surprise.
    where = "production, on purpose" if settings.production else settings.env
    return Outcome("provider", True, f"the built-in sandbox ({where}): no real money moves")


async def run_checks(settings: Settings, timeout_s: float) -> list[Outcome]:
    checks: list[Callable[[Settings, float], Awaitable[Outcome]]] = []
    if settings.redis_url:
        checks.append(check_redis)
    if settings.database_url:
        checks.append(check_database)
    if settings.gateway == "stripe":
        checks.append(check_stripe)
    else:
        checks.append(check_sandbox)
    # One after the other: a check's imports (stripe's take a second or more on a
    # loaded machine) would otherwise run down the others' timeouts.
    return [await check(settings, timeout_s) for check in checks]


def summary(settings: Settings) -> Outcome:
    engine = "redis" if settings.redis_url else "memory (one process)"
    parts = [f"env {settings.env}", f"engine {engine}", f"gateway {settings.gateway}"]
    if settings.merchant_webhook_url:
        # The shop's URL may carry its own credentials: a password, a ?token=.
        parts.append(f"merchant webhooks to {shown(redact(settings.merchant_webhook_url))}")
    if settings.generated:
        parts.append("generated at start: " + ", ".join(settings.generated))
    return Outcome("settings", True, "; ".join(parts))


def check(timeout_s: float) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"FAIL  settings: {exc}", flush=True)
        return BAD_CONFIG
    outcomes = [summary(settings), *asyncio.run(run_checks(settings, timeout_s))]
    for outcome in outcomes:
        print(outcome.line(), flush=True)
    return OK if all(o.ok for o in outcomes) else FAILED


def migrate(timeout_s: float) -> int:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(f"paylive: {exc}", flush=True)
        return BAD_CONFIG
    if not settings.database_url:
        print("paylive: PAYLIVE_DATABASE_URL is not set: there is no archive to migrate")
        return BAD_CONFIG
    try:
        from ..archive.store import apply_migrations
    except ImportError:
        print(
            "paylive: PAYLIVE_DATABASE_URL needs the PostgreSQL driver: "
            "pip install 'paylive[archive]'"
        )
        return BAD_CONFIG
    from ..archive.base import ArchiveUnavailable

    try:
        applied = asyncio.run(apply_migrations(settings.database_url, timeout_s))
    except ArchiveUnavailable as exc:
        print(f"paylive: PAYLIVE_DATABASE_URL ({shown(settings.database_url)}): {exc}")
        return FAILED
    if applied:
        print(f"applied {len(applied)} migration(s): {', '.join(applied)}")
    else:
        print("the schema is up to date: nothing to apply")
    return OK
