"""Merging the workers' observations of ``paylive load`` into one result, and its table."""

from __future__ import annotations

import argparse
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .accounting import EVENT_COUNTERS
from .config import Config
from .procstat import ProcSample


def percentiles(values: Iterable[float]) -> dict[str, Any]:
    """count, p50, p90, p99, max and mean (nearest rank), in the values' unit."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}

    def rank(p: float) -> float:
        return round(ordered[min(n - 1, max(0, int(-(-p * n // 100)) - 1))], 2)

    return {
        "count": n,
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "max": round(ordered[-1], 2),
        "mean": round(sum(ordered) / n, 2),
    }


def _sum_counters(dicts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for d in dicts:
        total.update(d)
    return dict(sorted(total.items()))


def _drive_cpu(got: Mapping[str, ProcSample]) -> dict[str, Any]:
    """CPU from the scheduled start to the moment every worker reported its drive over."""
    if "drive_start" not in got or "drove" not in got:
        return {}
    start, end = got["drive_start"], got["drove"]
    cpu = end.cpu_s - start.cpu_s
    window = end.at - start.at
    return {
        "drive_cpu_s": round(cpu, 2),
        "drive_window_s": round(window, 2),
        "cores": round(cpu / window, 3) if window > 0 else None,
        "drive_switches": {
            "voluntary": end.voluntary - start.voluntary,
            "involuntary": end.involuntary - start.involuntary,
        },
    }


def _server(
    samples: Mapping[str, ProcSample | None], sockets_opened: int, pid: int | None
) -> dict[str, Any] | None:
    if pid is None or samples.get("start") is None:
        return None
    got = {name: s for name, s in samples.items() if s is not None}
    out: dict[str, Any] = {"pid": pid, "samples": {k: v.as_dict() for k, v in got.items()}}
    out.update(_drive_cpu(got))
    if "sessions" in got and "sockets" in got:
        out["open_cpu_s"] = round(got["sockets"].cpu_s - got["sessions"].cpu_s, 2)
        grown = got["sockets"].rss_kb - got["sessions"].rss_kb
        out["rss_sockets_delta_mb"] = round(grown / 1024, 1)
        out["kb_per_socket"] = round(grown / sockets_opened, 1) if sockets_opened else None
    if "start" in got and "sessions" in got:
        out["rss_sessions_delta_mb"] = round(
            (got["sessions"].rss_kb - got["start"].rss_kb) / 1024, 1
        )
    return out


def _also(samples: Mapping[str, ProcSample | None], pids: list[int]) -> dict[str, Any] | None:
    got = {name: s for name, s in samples.items() if s is not None}
    if not got:
        return None
    out: dict[str, Any] = {"pids": pids, "samples": {k: v.as_dict() for k, v in got.items()}}
    out.update(_drive_cpu(got))
    return out


class Samples(Protocol):
    """The /proc samples of a run, by moment (see ``parent.Sampler``)."""

    pid: int | None
    also: list[int]
    server: dict[str, ProcSample | None]
    others: dict[str, ProcSample | None]


def per_second(times: Iterable[float], origin: float) -> list[int]:
    """How many of ``times`` (epoch s) fall in each one-second bucket from ``origin``;
    those before it are left out."""
    counts: Counter[int] = Counter(int(t - origin) for t in times if t >= origin)
    return [counts[i] for i in range(max(counts) + 1)] if counts else []


def restart_report(
    restart: Mapping[str, Any], sockets: list[Mapping[str, Any]], lost: int
) -> dict[str, Any]:
    """``--restart-pid``: the closes and the reconnects (their first tries) per
    one-second bucket from the signal, the busiest bucket's share of the reconnects,
    how many sockets came back, and the events lost."""
    at = float(restart["signal_at"])
    closes = per_second((t for s in sockets for t in s.get("closed_at", ())), at)
    reconnects = per_second((t for s in sockets for t in s.get("reconnect_tried_at", ())), at)
    total = sum(reconnects)
    return {
        "pid": restart["pid"],
        "after_s": restart["after_s"],
        "signal_at": round(at, 3),
        "closed": sum(closes),
        "closes_per_s": closes,
        # Reconnects arrive at their first try; "reconnected" opened in the end.
        "reconnects": total,
        "reconnected": sum(s["reconnected"] for s in sockets),
        "reconnects_per_s": reconnects,
        "busiest_second_share": round(max(reconnects) / total, 3) if total else None,
        "seconds_with_reconnects": sum(1 for n in reconnects if n),
        "events_lost": lost,
    }


def merge(
    args: argparse.Namespace,
    configs: list[Config],
    results: list[dict[str, Any]],
    samples: Samples,
    generator: dict[str, float],
    timings: Mapping[str, float],
    restart: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The workers' results as one document: requested, sockets, changes, events,
    latency, admin feeds, generator, server, machine, and the problems in words."""
    mode = configs[0].mode
    duration = float(args.duration)
    sockets = [r["sockets"] for r in results]
    changes = [r["changes"] for r in results]
    events = [r["events"] for r in results]
    opened = sum(s["opened"] for s in sockets)  # for the first sessions
    replaced = sum(s["replaced"] for s in sockets)
    out: dict[str, Any] = {
        "mode": mode,
        "url": configs[0].base_url,
        "format": args.format,
        "requested": {
            "sockets": int(args.sockets),
            "admins": int(args.admins or 0),
            "rate": float(args.rate),
            "duration_s": duration,
        },
        "processes": len(configs),
        "setup": {k: round(v, 2) for k, v in timings.items() if k.endswith("_s")},
        "sessions": {
            "created": sum(r["sessions"]["created"] for r in results),
            "create_errors": _sum_counters(r["sessions"]["create_errors"] for r in results),
            "counted": sum(r["sessions"]["counted"] for r in results),
        },
    }
    if mode == "ws":
        out["sockets"] = {
            "requested": int(args.sockets),
            "opened": opened,
            # A retired session's socket is closed and its customer gets a fresh session.
            "replacements_opened": sum(s["replacements_opened"] for s in sockets),
            "failed": sum(sum(s["failures"].values()) for s in sockets),
            "failures": _sum_counters(s["failures"] for s in sockets),
            "closed_unexpectedly": sum(s["closed_unexpectedly"] for s in sockets),
            "close_codes": _sum_counters(s["close_codes"] for s in sockets),
            "reconnects": sum(s["reconnects"] for s in sockets),
            "reconnected": sum(s["reconnected"] for s in sockets),
            "replaced": replaced,
            "held_at_end": sum(s["held_at_end"] for s in sockets),
            # Closed by the generator on purpose: the session ended (it is replaced
            # while the drive lasts, not after).
            "closed_after_session_end": sum(s["closed_after_session_end"] for s in sockets),
        }
    ok = sum(c["ok"] for c in changes)
    out["changes"] = {
        "scheduled": sum(c["scheduled"] for c in changes),
        "sent": sum(c["sent"] for c in changes),
        "ok": ok,
        "achieved_per_s": round(ok / duration, 1),
        "conflicts": _sum_counters(c["conflicts"] for c in changes),
        "errors": _sum_counters(c["errors"] for c in changes),
        "skipped_busy": sum(c["skipped_busy"] for c in changes),
        "skipped_no_session": sum(c["skipped_no_session"] for c in changes),
        "late_100ms": sum(c["late_100ms"] for c in changes),
        "max_lag_ms": max((c["max_lag_ms"] for c in changes), default=0.0),
        "peak_in_flight": sum(c["peak_in_flight"] for c in changes),
        "in_flight_cap": sum(c.concurrency for c in configs),
        "http_ms": percentiles(x for c in changes for x in c["http_ms"]),
        "refused_ms": percentiles(x for c in changes for x in c.get("refused_ms", ())),
        # The generator's own event-loop lag (every process's ticks together).
        "generator_lag_ms": percentiles(x for c in changes for x in c.get("loop_lag_ms", ())),
        "sessions_replaced": replaced,
    }
    out["events"] = {key: sum(e[key] for e in events) for key in EVENT_COUNTERS}
    out["events"]["by_type"] = _sum_counters(e["by_type"] for e in events)
    out["latency_ms"] = percentiles(x for r in results for x in r["latency_ms"])
    if restart is not None:
        out["restart"] = restart_report(restart, sockets, out["events"]["lost"])
    if mode == "poll":
        polls = [r["poll"] for r in results]
        window = duration + configs[0].poll_interval
        out["poll"] = {
            "clients": sum(p["clients"] for p in polls),
            "interval_s": configs[0].poll_interval,
            "requests": sum(p["polls"] for p in polls),
            "requests_per_s": round(sum(p["polls"] for p in polls) / window, 1),
            "errors": _sum_counters(p["errors"] for p in polls),
            "skipped_rounds": sum(p["skipped_rounds"] for p in polls),
            "observation_delay_ms": percentiles(x for p in polls for x in p["delay_ms"]),
        }
    if any("admin" in r for r in results):
        finals: dict[str, int] = {}
        for r in results:
            finals.update(r.get("finals") or {})
        feeds = [f for r in results for f in r.get("admin", {}).get("feeds", [])]
        received = lost = 0
        for feed in feeds:
            got = feed["received"]
            for sid, final in finals.items():
                count = min(final, got.get(sid, 0))
                received += count
                lost += final - count
        out["admin"] = {
            "requested": sum(r.get("admin", {}).get("requested", 0) for r in results),
            "opened": len(feeds),
            "events_expected": len(feeds) * sum(finals.values()),
            "events_received": received,
            "lost": lost,
            "out_of_order": sum(f["out_of_order"] for f in feeds),
            "closed_unexpectedly": sum(1 for f in feeds if f["closed_code"] is not None),
            "by_type": _sum_counters(f["types"] for f in feeds),
            "latency_ms": percentiles(
                x for r in results for x in r.get("admin", {}).get("latency_ms", [])
            ),
        }
    drive_cpu = sum(r["cpu"]["drive_user_s"] + r["cpu"]["drive_sys_s"] for r in results)
    out["generator"] = {
        "cpu_s": round(generator["user_s"] + generator["sys_s"], 2),
        "user_s": round(generator["user_s"], 2),
        "sys_s": round(generator["sys_s"], 2),
        "wall_s": round(generator["wall_s"], 1),
        "drive_cpu_s": round(drive_cpu, 2),
        "drive_cores": round(drive_cpu / duration, 3),
    }
    server = _server(samples.server, opened, samples.pid)
    if server is not None:
        out["server"] = server
    also = _also(samples.others, samples.also)
    if also is not None:
        out["also"] = also
    busy = timings.get("machine_busy_cores")
    if busy is not None:
        # Whatever the server and the generator did not use went to other processes.
        used = out["generator"]["drive_cores"] + (server or {}).get("cores", 0.0)
        used += (also or {}).get("cores") or 0.0
        out["machine"] = {
            "cores": os.cpu_count(),
            "busy_cores_during_drive": round(busy, 3),
            "others_cores_during_drive": round(max(0.0, busy - used), 3) if server else None,
        }
    out["problems"] = problems(out)
    out["ok"] = not out["problems"]
    return out


def problems(out: Mapping[str, Any]) -> list[str]:
    """What went wrong, in words; empty when every socket held and nothing was lost."""
    found: list[str] = []
    sockets = out.get("sockets")
    if sockets:
        if sockets["failed"]:
            found.append(f"{sockets['failed']} sockets failed to open: {sockets['failures']}")
        unexpected = sockets["closed_unexpectedly"]
        if "restart" in out:
            # A restarted worker closes its sockets on purpose (1012, or 1001 at once).
            codes = sockets["close_codes"]
            unexpected -= codes.get("1012", 0) + codes.get("1001", 0)
        if unexpected:
            found.append(f"{unexpected} sockets closed unexpectedly: {sockets['close_codes']}")
    events = out["events"]
    if out["mode"] == "ws":
        if events["lost"]:
            found.append(f"{events['lost']} of {events['sent']} events lost")
        if events["out_of_order"]:
            found.append(f"{events['out_of_order']} events duplicated or out of order")
    changes = out["changes"]
    if changes["errors"]:
        found.append(f"state-change errors: {changes['errors']}")
    skipped = changes["skipped_busy"] + changes["skipped_no_session"]
    if skipped:
        found.append(f"{skipped} scheduled state changes not sent (generator or server saturated)")
    if out["sessions"]["create_errors"]:
        found.append(f"session creation errors: {out['sessions']['create_errors']}")
    admin = out.get("admin")
    if admin and (admin["lost"] or admin["opened"] < admin["requested"]):
        found.append(
            f"admin feeds: {admin['opened']}/{admin['requested']} opened, "
            f"{admin['lost']} events lost"
        )
    return found
