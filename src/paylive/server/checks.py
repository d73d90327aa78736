"""Checks ``paylive serve`` makes once at start, before any worker runs."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis


def redis_persistence_warning(url: str, timeout_s: float) -> str | None:
    """A warning when the Redis at ``url`` keeps no append-only file: a restart then
    forgets every session in flight. None when it keeps one, and when it cannot be
    asked (managed services often disable ``CONFIG``; the engine reports an outage
    on its own)."""
    parts = urlsplit(url)
    # The engine's own flag (``?cluster=1``) is no option of redis-py's.
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "cluster"])
    client = redis.Redis.from_url(
        urlunsplit(parts._replace(query=query)),
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    try:
        appendonly = client.config_get("appendonly").get("appendonly")
    except (redis.RedisError, OSError):
        return None
    finally:
        client.close()
    if appendonly is None or str(appendonly).lower() == "yes":
        return None
    return (
        f"Redis at {parts.hostname or parts.path} keeps no append-only file (appendonly "
        f"{appendonly}): a restart forgets every session in flight, and their sockets are "
        "closed with 4404. Set appendonly yes (see README, Redis settings for production)."
    )
