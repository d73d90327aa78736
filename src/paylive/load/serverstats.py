"""What the server says about itself, read before and after the drive: each worker's
event-loop lag (``paylive_loop_lag_seconds{worker}`` on ``/metrics``) and, with
``--redis-url``, the Redis server's command counts and bytes (``INFO``).

The differences between the two readings belong to the drive alone. Loop lag comes as
a histogram, so its p99 and max are bucket bounds ("at most"), per worker.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

LAG_METRIC = "paylive_loop_lag_seconds_bucket"
OWN_METRIC = "paylive_loop_lag_own_seconds_bucket"
GC_METRIC = "paylive_gc_pause_seconds"
_SAMPLE = re.compile(r"^(\w+)\{([^}]*)\}\s+(\S+)")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
TIMEOUT_S = 5.0

# worker pid -> bucket upper bound (s, inf for +Inf) -> cumulative count
LagBuckets = dict[str, dict[float, float]]


@dataclass
class Reading:
    """One scrape of ``/metrics``: the loop-lag buckets by worker, and the garbage
    collections' count, total pause and buckets by (worker, generation)."""

    lag: LagBuckets = field(default_factory=dict)
    own: LagBuckets = field(default_factory=dict)
    gc_count: dict[tuple[str, str], float] = field(default_factory=dict)
    gc_seconds: dict[tuple[str, str], float] = field(default_factory=dict)
    gc_buckets: dict[tuple[str, str], dict[float, float]] = field(default_factory=dict)


def parse_metrics(text: str) -> Reading:
    """What ``paylive load`` needs of a Prometheus text page."""
    out = Reading()
    for line in text.splitlines():
        if not line.startswith(("paylive_loop_lag", GC_METRIC)):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, value = match.group(1), float(match.group(3))
        labels = dict(_LABEL.findall(match.group(2)))
        worker = labels.get("worker")
        if worker is None:
            continue
        if name == LAG_METRIC and "le" in labels:
            out.lag.setdefault(worker, {})[float(labels["le"])] = value
        elif name == OWN_METRIC and "le" in labels:
            out.own.setdefault(worker, {})[float(labels["le"])] = value
        elif name.startswith(GC_METRIC) and "generation" in labels:
            key = (worker, labels["generation"])
            if name.endswith("_count"):
                out.gc_count[key] = value
            elif name.endswith("_sum"):
                out.gc_seconds[key] = value
            elif name.endswith("_bucket") and "le" in labels:
                out.gc_buckets.setdefault(key, {})[float(labels["le"])] = value
    return out


def parse_lag(text: str) -> LagBuckets:
    """The loop-lag buckets of a Prometheus text page, by worker."""
    return parse_metrics(text).lag


def scrape(base_url: str, token: str | None) -> Reading | None:
    """``/metrics``' readings, or None when the server does not answer them."""
    request = urllib.request.Request(base_url.rstrip("/") + "/metrics")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
            return parse_metrics(answer.read().decode("utf-8", "replace"))
    except (OSError, urllib.error.URLError, ValueError):
        return None


def gc_between(before: Reading | None, after: Reading | None) -> dict[str, Any] | None:
    """Per worker and generation: collections between the readings, their total pause
    and the smallest bucket bound that holds the longest (ms)."""
    if after is None or not after.gc_count:
        return None
    earlier = before or Reading()
    out: dict[str, Any] = {}
    for key, count in sorted(after.gc_count.items()):
        n = count - earlier.gc_count.get(key, 0.0)
        if n <= 0:
            continue
        worker, generation = key
        buckets = after.gc_buckets.get(key, {})
        old = earlier.gc_buckets.get(key, {})
        delta = [(b, buckets[b] - old.get(b, 0.0)) for b in sorted(buckets)]
        top = next((b for b, k in delta if k >= n), float("inf"))
        seconds = after.gc_seconds.get(key, 0.0) - earlier.gc_seconds.get(key, 0.0)
        out.setdefault(worker, {})[f"gen{generation}"] = {
            "collections": int(n),
            "total_ms": round(seconds * 1000, 1),
            "max_ms": _bound_ms(top),
        }
    return out or None


def _bound_ms(bound: float) -> float | None:
    return None if bound == float("inf") else round(bound * 1000, 2)


def lag_between(before: LagBuckets | None, after: LagBuckets | None) -> dict[str, Any] | None:
    """Per worker: the ticks observed between the readings, and the smallest bucket
    bounds that hold 99 % and all of them (ms; None: beyond the last bucket)."""
    if not after:
        return None
    workers: dict[str, Any] = {}
    for worker, buckets in sorted(after.items()):
        earlier = (before or {}).get(worker, {})
        bounds = sorted(buckets)
        delta = [(b, buckets[b] - earlier.get(b, 0.0)) for b in bounds]
        total = delta[-1][1] if delta else 0.0
        if total <= 0:
            continue
        p99 = next(b for b, n in delta if n >= 0.99 * total)
        top = next(b for b, n in delta if n >= total)
        over = {
            f"over_{int(ms)}ms": int(total - n)
            for b, n in delta
            if (ms := b * 1000) in (10, 50, 100)
        }
        workers[worker] = {
            "ticks": int(total),
            "p99_ms": _bound_ms(p99),
            "max_ms": _bound_ms(top),
            **over,
        }
    if not workers:
        return None
    return {
        "workers": workers,
        # The worst worker's, the figure a table has room for.
        "p99_ms": _worst(w["p99_ms"] for w in workers.values()),
        "max_ms": _worst(w["max_ms"] for w in workers.values()),
    }


def _worst(values: Any) -> float | None:
    got = list(values)
    return None if None in got else max(got)


def redis_reading(url: str) -> dict[str, Any] | None:
    """``INFO commandstats`` and the byte counters of the Redis at ``url``."""
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=TIMEOUT_S)
        try:
            commands = client.info("commandstats")
            stats = client.info("stats")
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return None
    calls = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in commands.items()
        if isinstance(value, Mapping) and "calls" in value
    }
    return {
        "calls": calls,
        "net_input_bytes": int(stats.get("total_net_input_bytes", 0)),
        "net_output_bytes": int(stats.get("total_net_output_bytes", 0)),
        # One per read from a client's socket: a command, a pipeline or a script,
        # whatever it runs inside (a close is one too).
        "reads_processed": int(stats.get("total_reads_processed", 0)),
    }


_SCRIPTS = ("evalsha", "eval", "fcall", "evalsha_ro", "eval_ro")


def redis_between(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, changes: int
) -> dict[str, Any] | None:
    """What Redis did between the readings, in all and per state change done.

    ``commands`` counts every command Redis ran, those run inside a script included;
    ``round_trips`` counts the reads Redis made from its clients' sockets (a command,
    a script or a whole pipeline is one; the two INFO readings left out): the waits
    a change pays for."""
    if not before or not after:
        return None
    calls = {
        name: n - before["calls"].get(name, 0)
        for name, n in after["calls"].items()
        if n - before["calls"].get(name, 0) > 0
    }
    calls["info"] = max(0, calls.get("info", 0) - 2)
    if not calls["info"]:
        del calls["info"]
    processed = after["reads_processed"] - before["reads_processed"] - 2
    net_in = after["net_input_bytes"] - before["net_input_bytes"]
    net_out = after["net_output_bytes"] - before["net_output_bytes"]
    out: dict[str, Any] = {
        "commands": sum(calls.values()),
        "round_trips": max(0, processed),
        "by_command": dict(sorted(calls.items(), key=lambda kv: -kv[1])),
        "scripts": sum(calls.get(name, 0) for name in _SCRIPTS),
        "net_input_bytes": net_in,
        "net_output_bytes": net_out,
        "changes": changes,
    }
    if changes > 0:
        out["per_change"] = {
            "commands": round(out["commands"] / changes, 2),
            "round_trips": round(out["round_trips"] / changes, 2),
            "scripts": round(out["scripts"] / changes, 2),
            "publish": round(sum(calls.get(n, 0) for n in ("publish", "spublish")) / changes, 2),
            "bytes_in": round(net_in / changes),
            "bytes_out": round(net_out / changes),
        }
    return out
