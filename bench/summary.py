"""The benchmark's runs reduced to rows, and the Markdown tables BENCHMARKS.md shows."""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from .systems import ROOT, SYSTEMS


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip()


def _get(d: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return None
        d = d[key]
    return d


def rate_row(result: dict[str, Any], rate: int) -> dict[str, Any]:
    """One system at one rate."""
    row: dict[str, Any] = {"system": result["bench"]["system"], "rate": rate}
    if "failed" in result:
        return {**row, "failed": result["failed"]}
    changes, events, admin = result["changes"], result["events"], result.get("admin") or {}
    ok = changes["ok"]
    server_cpu = _get(result, "server", "drive_cpu_s") or 0.0
    redis_cpu = _get(result, "also", "drive_cpu_s") or 0.0
    errors = changes["errors"]
    return {
        **row,
        "done_per_s": changes["achieved_per_s"],
        "refused": errors.get("503", 0),
        "errors": sum(v for k, v in errors.items() if k != "503"),
        "not_sent": changes["skipped_busy"] + changes["skipped_no_session"],
        "p50": result["latency_ms"]["p50"],
        "p99": result["latency_ms"]["p99"],
        "admin_p99": _get(admin, "latency_ms", "p99"),
        "events": events["sent"],
        "lost": events["lost"],
        "out_of_order": events["out_of_order"],
        "admin_events": admin.get("events_expected", 0),
        "admin_lost": admin.get("lost", 0),
        "server_cores": _get(result, "server", "cores"),
        "redis_cores": _get(result, "also", "cores"),
        "cpu_per_1000": round((server_cpu + redis_cpu) / ok * 1000, 3) if ok else None,
        "server_cpu_per_1000": round(server_cpu / ok * 1000, 3) if ok else None,
        "others_cores": _get(result, "machine", "others_cores_during_drive"),
        "http_p99": changes["http_ms"]["p99"],
        "refused_p50": _get(changes, "refused_ms", "p50"),
        # The tail too: the refusals a worker made new connections wait for (one
        # accepted a turn, BENCHMARKS.md) were 1 % of them, invisible in the p50.
        "refused_p99": _get(changes, "refused_ms", "p99"),
        "refused_max": _get(changes, "refused_ms", "max"),
        "loop_lag_p99": _get(result, "loop_lag", "p99_ms"),
        "loop_lag_max": _get(result, "loop_lag", "max_ms"),
        "redis_per_change": _get(result, "redis", "per_change"),
    }


def idle_row(result: dict[str, Any], sockets: int) -> dict[str, Any]:
    row: dict[str, Any] = {"system": result["bench"]["system"], "sockets": sockets}
    if "failed" in result:
        return {**row, "failed": result["failed"]}
    closed = result["sockets"]["closed_unexpectedly"]
    return {
        **row,
        "opened": result["sockets"]["opened"],
        "closed": closed,
        # Sockets closed while they were counted make the quotient meaningless.
        "kb_per_socket": None if closed else _get(result, "server", "kb_per_socket"),
        "rss_mb": _get(result, "server", "samples", "sockets", "rss_mb"),
        "open_s": result["setup"].get("open_s"),
    }


def commit() -> str:
    """The checked-out commit, marked when the working tree differs from it."""
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    return _git("rev-parse", "--short", "HEAD") + (" (with local changes)" if dirty else "")


def summarize(
    results: list[dict[str, Any]],
    systems: list[str],
    args: argparse.Namespace,
    wall_s: float,
    at_commit: str,
) -> dict[str, Any]:
    rates, idle = [], []
    for result in results:
        kind, _, size = result["bench"]["run"].partition("-")
        if kind == "rate":
            size, _, turn = size.partition("-round-")
            rates.append({**rate_row(result, int(size)), "round": int(turn or 1)})
        else:
            idle.append(idle_row(result, int(size)))
    others = [r["others_cores"] for r in rates if r.get("others_cores") is not None]
    rounds = getattr(args, "rounds", 1)
    return {
        "meta": {
            "rounds": rounds,
            "commit": at_commit,
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "python": platform.python_version(),
            "cores": os.cpu_count(),
            "sockets": args.sockets,
            "admins": args.admins,
            "duration_s": args.duration,
            "wall_s": round(wall_s),
            # Other processes on the machine (other work, not the servers, their Redis or
            # the generator) during the drives: how noisy the run was.
            "others_cores_mean": round(sum(others) / len(others), 2) if others else None,
            "loadavg_at_end": [round(x, 1) for x in os.getloadavg()],
        },
        "labels": {name: SYSTEMS[name].label for name in systems},
        "rates": median_runs(rates) if rounds > 1 else rates,
        "spread": spread(rates, systems) if rounds > 1 else [],
        "idle": idle,
    }


def _cpu(row: dict[str, Any]) -> float | None:
    return None if "failed" in row else row.get("cpu_per_1000")


def median_runs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each system's run at each rate whose CPU per 1,000 changes is the median of its
    rounds (the lower of the two middle ones for an even count): a run that happened,
    so that its latencies, losses and refusals go together; a failed one only when all
    failed."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["rate"], row["system"]), []).append(row)
    picked = []
    for group in groups.values():
        measured = sorted((r for r in group if _cpu(r) is not None), key=lambda r: _cpu(r) or 0)
        chosen = measured[(len(measured) - 1) // 2] if measured else group[0]
        picked.append({**chosen, "rounds_measured": len(measured), "rounds_run": len(group)})
    return picked


def _range(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def spread(rows: list[dict[str, Any]], systems: list[str]) -> list[dict[str, Any]]:
    """Over the rounds, for each rate and system: how far the figures moved, and its CPU
    per 1,000 changes over the memory engine's in the same round (the two ran minutes
    apart at most, so the machine's drift falls on both)."""
    memory = {(r["rate"], r["round"]): _cpu(r) for r in rows if r["system"] == "paylive-memory"}
    out = []
    for rate in sorted({r["rate"] for r in rows}):
        for name in systems:
            runs = [r for r in rows if r["rate"] == rate and r["system"] == name]
            done = [r for r in runs if _cpu(r) is not None]
            ratios = [
                (_cpu(r) or 0) / base
                for r in done
                if (base := memory.get((rate, r["round"]))) and name != "paylive-memory"
            ]
            out.append(
                {
                    "rate": rate,
                    "system": name,
                    "rounds_run": len(runs),
                    "rounds_measured": len(done),
                    "done_per_s": _range([r["done_per_s"] for r in done]),
                    "p99": _range([r["p99"] for r in done if r["p99"] is not None]),
                    "refused_p50": _range(
                        [r["refused_p50"] for r in done if r.get("refused_p50") is not None]
                    ),
                    "cpu_per_1000": _range([_cpu(r) or 0 for r in done]),
                    "cpu_over_memory": _range(ratios),
                }
            )
    return out


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def tables(summary: dict[str, Any]) -> str:
    meta, labels = summary["meta"], summary["labels"]
    lines = [
        f"Commit `{meta['commit']}`, {meta['date']}, Python {meta['python']}, "
        f"{meta['cores']} cores; {meta['sockets']:,} customer sockets + {meta['admins']} admin "
        f"feeds, {meta['duration_s']:g} s per rate{_rounds_note(meta)}, a fresh server and "
        "Redis for every run; "
        f"the whole bench took {meta['wall_s']:,} s. Other processes took "
        f"{_f(meta['others_cores_mean'], 2)} cores on average during the drives (load average "
        f"at the end {' / '.join(map(str, meta['loadavg_at_end']))}).",
        "",
        "| changes/s | system | done/s | 503 | not sent | latency p50 / p99 ms | admin p99 ms "
        "| events lost (customer + admin) | server cores | Redis cores "
        "| CPU s per 1,000 changes (server + Redis) | others' cores |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(summary["rates"], key=lambda r: (r["rate"], list(labels).index(r["system"]))):
        name = labels[r["system"]]
        if "failed" in r:
            lines.append(f"| {r['rate']:,} | {name} | failed: {r['failed'][:80]} |" + " |" * 9)
            continue
        lost = f"{r['lost']:,} of {r['events']:,} + {r['admin_lost']:,} of {r['admin_events']:,}"
        cpu = f"{_f(r['cpu_per_1000'], 2)} ({_f(r['server_cpu_per_1000'], 2)} + "
        cpu += f"{_f((r['cpu_per_1000'] or 0) - (r['server_cpu_per_1000'] or 0), 2)})"
        lines.append(
            f"| {r['rate']:,} | {name} | {_f(r['done_per_s'], 0)} | {r['refused']:,} "
            f"| {r['not_sent']:,} | {_f(r['p50'])} / {_f(r['p99'])} | {_f(r['admin_p99'])} "
            f"| {lost} | {_f(r['server_cores'], 2)} | {_f(r['redis_cores'], 2)} | {cpu} "
            f"| {_f(r['others_cores'], 2)} |"
        )
    lines += _tail_and_cost(summary)
    lines += _spread_table(summary)
    if summary["idle"]:
        lines += [
            "",
            "| idle sockets | system | opened | closed unexpectedly | server RSS per socket KB "
            "| server RSS MB | open s |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sorted(
            summary["idle"], key=lambda r: (r["sockets"], list(labels).index(r["system"]))
        ):
            name = labels[r["system"]]
            if "failed" in r:
                lines.append(f"| {r['sockets']:,} | {name} | failed: {r['failed'][:80]} | | | | |")
                continue
            lines.append(
                f"| {r['sockets']:,} | {name} | {r['opened']:,} | {r['closed']:,} "
                f"| {_f(r['kb_per_socket'])} "
                f"| {_f(r['rss_mb'], 0)} | {_f(r['open_s'])} |"
            )
    return "\n".join(lines) + "\n"


def _tail_and_cost(summary: dict[str, Any]) -> list[str]:
    """The second table: each worker's loop lag, the 503s' speed and Redis per change."""
    labels = summary["labels"]
    lines = [
        "",
        "| changes/s | system | loop lag p99 / max ms (worst worker) | 503 p50 / p99 / max ms "
        "| Redis round trips per change | Redis commands per change | publishes per change "
        "| Redis bytes in / out per change |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(summary["rates"], key=lambda r: (r["rate"], list(labels).index(r["system"]))):
        if "failed" in r:
            continue
        pc = r.get("redis_per_change") or {}
        lag = (
            "-"
            if r.get("loop_lag_p99") is None and r.get("loop_lag_max") is None
            else (f"≤ {_f(r.get('loop_lag_p99'))} / ≤ {_f(r.get('loop_lag_max'))}")
        )
        traffic = f"{_f(pc.get('bytes_in'), 0)} / {_f(pc.get('bytes_out'), 0)}" if pc else "-"
        refused = (
            "-"
            if r.get("refused_p50") is None
            else " / ".join(_f(r.get(k)) for k in ("refused_p50", "refused_p99", "refused_max"))
        )
        lines.append(
            f"| {r['rate']:,} | {labels[r['system']]} | {lag} | {refused} "
            f"| {_f(pc.get('round_trips'), 2)} | {_f(pc.get('commands'), 2)} "
            f"| {_f(pc.get('publish'), 2)} | {traffic} |"
        )
    return lines


def _rounds_note(meta: dict[str, Any]) -> str:
    rounds = meta.get("rounds", 1)
    if rounds <= 1:
        return ""
    return (
        f", {rounds} rounds per rate (below, each system's median run by CPU per 1,000 "
        "changes; the last table, how far the rounds moved)"
    )


def _spread(value: dict[str, float] | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return (
        f"{_f(float(value['median']), digits)} ({_f(float(value['min']), digits)} to "
        f"{_f(float(value['max']), digits)})"
    )


def _spread_table(summary: dict[str, Any]) -> list[str]:
    """With --rounds: the median and range of each figure over the rounds."""
    if not summary.get("spread"):
        return []
    labels = summary["labels"]
    lines = [
        "",
        "| changes/s | system | rounds measured | done/s | latency p99 ms | 503 p50 ms "
        "| CPU s per 1,000 changes | ÷ memory's, same round |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in summary["spread"]:
        lines.append(
            f"| {r['rate']:,} | {labels[r['system']]} | {r['rounds_measured']} of "
            f"{r['rounds_run']} | {_spread(r['done_per_s'], 0)} | {_spread(r['p99'])} "
            f"| {_spread(r['refused_p50'])} | {_spread(r['cpu_per_1000'], 2)} "
            f"| {_spread(r['cpu_over_memory'], 2)} |"
        )
    lines.append("")
    lines.append("Each cell: the median over the rounds, then the lowest to the highest.")
    return lines


def write_tables(summary: dict[str, Any], path: Path) -> None:
    path.write_text(tables(summary))
