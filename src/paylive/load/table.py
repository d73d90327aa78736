"""The table ``paylive load`` prints: one line per aspect of the merged result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _pct_line(p: Mapping[str, Any]) -> str:
    return (
        "  ".join(f"{k} {_fmt(p[k])}" for k in ("p50", "p90", "p99", "max"))
        + f"  (n={p['count']:,})"
    )


def render_table(out: Mapping[str, Any]) -> str:
    req = out["requested"]
    title = (
        f"paylive load: {out['mode']}, {req['sockets']:,} "
        f"{'sockets' if out['mode'] == 'ws' else 'polling clients'}, "
        f"{req['rate']:g} changes/s for {req['duration_s']:g} s, {out['format']}, "
        f"{out['processes']} process{'es' if out['processes'] > 1 else ''}"
    )
    rows: list[tuple[str, str]] = []
    sockets = out.get("sockets")
    if sockets:
        rows.append(
            (
                "sockets",
                f"opened {_fmt(sockets['opened'])}/{_fmt(sockets['requested'])}"
                f" (+{_fmt(sockets['replacements_opened'])} for replacement sessions)  failed {sockets['failed']}"
                f"  closed unexpectedly {sockets['closed_unexpectedly']}"
                f" {sockets['close_codes'] or ''}  held at end {_fmt(sockets['held_at_end'])}"
                f" (closed after their session ended {_fmt(sockets['closed_after_session_end'])})",
            )
        )
    ch = out["changes"]
    rows.append(
        (
            "state changes",
            f"scheduled {_fmt(ch['scheduled'])}  ok {_fmt(ch['ok'])}"
            f" ({_fmt(ch['achieved_per_s'])}/s)  409 {sum(ch['conflicts'].values())}"
            f"  errors {sum(ch['errors'].values())}"
            f"  not sent {ch['skipped_busy'] + ch['skipped_no_session']}"
            f"  max lag {_fmt(ch['max_lag_ms'])} ms",
        )
    )
    rows.append(("change HTTP ms", _pct_line(ch["http_ms"])))
    if ch["refused_ms"]["count"]:
        rows.append(("503 answer ms", _pct_line(ch["refused_ms"])))
    if ch.get("generator_lag_ms", {}).get("count"):
        rows.append(("generator lag ms", _pct_line(ch["generator_lag_ms"])))
    ev = out["events"]
    if out["mode"] == "ws":
        rows.append(
            (
                "durable events",
                f"sent {_fmt(ev['sent'])}  received {_fmt(ev['received'])}"
                f"  lost {_fmt(ev['lost'])}  gaps {ev['gaps']}"
                f"  out of order {ev['out_of_order']}"
                f"  (countdowns {_fmt(ev['by_type'].get('countdown', 0))})",
            )
        )
        rows.append(("latency ms", _pct_line(out["latency_ms"])))
        restart = out.get("restart")
        if restart:
            share = restart["busiest_second_share"]
            rows.append(
                (
                    "restart",
                    f"SIGTERM to {restart['pid']} at {_fmt(restart['after_s'])} s:"
                    f" closed {_fmt(restart['closed'])}  reconnects {_fmt(restart['reconnects'])}"
                    f"  back {_fmt(restart['reconnected'])}"
                    f"  events lost {_fmt(restart['events_lost'])}"
                    f"  busiest second {'-' if share is None else f'{share:.0%}'}",
                )
            )
            rows.append(("closes per s", " ".join(str(n) for n in restart["closes_per_s"])))
            rows.append(("reconnects per s", " ".join(str(n) for n in restart["reconnects_per_s"])))
    else:
        poll = out["poll"]
        rows.append(
            (
                "polls",
                f"{_fmt(poll['requests'])} GETs ({_fmt(poll['requests_per_s'])}/s)"
                f"  errors {sum(poll['errors'].values())}"
                f"  skipped rounds {poll['skipped_rounds']}",
            )
        )
        rows.append(
            (
                "states",
                f"reached {_fmt(ev['states'])}  never polled {_fmt(ev['states_unobserved'])}"
                f"  events hidden in seq jumps {_fmt(ev['seq_jumps_missed'])}",
            )
        )
        rows.append(("observe delay ms", _pct_line(poll["observation_delay_ms"])))
    admin = out.get("admin")
    if admin:
        rows.append(
            (
                "admin feeds",
                f"{admin['opened']}/{admin['requested']}  events"
                f" {_fmt(admin['events_received'])}/{_fmt(admin['events_expected'])}"
                f"  lost {_fmt(admin['lost'])}",
            )
        )
        rows.append(("admin latency ms", _pct_line(admin["latency_ms"])))
    gen = out["generator"]
    rows.append(
        (
            "generator CPU",
            f"{_fmt(gen['cpu_s'])} s total, {_fmt(gen['drive_cores'])} cores during the drive",
        )
    )
    server = out.get("server")
    if server:
        line = f"{_fmt(server.get('cores'))} cores during the drive"
        if server.get("kb_per_socket") is not None:
            line += (
                f"; RSS +{_fmt(server['rss_sockets_delta_mb'])} MB for the sockets"
                f" = {_fmt(server['kb_per_socket'])} KB/socket"
            )
        if "rss_sessions_delta_mb" in server:
            line += f"; +{_fmt(server['rss_sessions_delta_mb'])} MB for the sessions"
        rows.append(("server", line))
    also = out.get("also")
    if also and also.get("cores") is not None:
        rows.append(
            (
                "sampled apart",
                f"pids {also['pids']}: {_fmt(also['cores'])} cores during the drive",
            )
        )
    lag = out.get("loop_lag")
    if lag:
        per = "  ".join(
            f"{pid}: p99 <= {_fmt(w['p99_ms'])} max <= {_fmt(w['max_ms'])}"
            for pid, w in lag["workers"].items()
        )
        rows.append(("loop lag ms", per))
    own = out.get("loop_lag_own")
    if own:
        per = "  ".join(
            f"{pid}: p99 <= {_fmt(w['p99_ms'])} max <= {_fmt(w['max_ms'])}"
            for pid, w in own["workers"].items()
        )
        rows.append(("  without CPU wait", per))
    collections = out.get("gc")
    if collections:
        per = "  ".join(
            f"{pid}: "
            + ", ".join(
                f"{gen} {g['collections']}x {_fmt(g['total_ms'])} ms (max <= {_fmt(g['max_ms'])})"
                for gen, g in gens.items()
            )
            for pid, gens in collections.items()
        )
        rows.append(("GC pauses", per))
    redis = out.get("redis")
    if redis and redis.get("per_change"):
        pc = redis["per_change"]
        rows.append(
            (
                "Redis per change",
                f"round trips {_fmt(pc['round_trips'])}  commands {_fmt(pc['commands'])}"
                f"  scripts {_fmt(pc['scripts'])}  publishes {_fmt(pc['publish'])}"
                f"  bytes in {_fmt(pc['bytes_in'])} out {_fmt(pc['bytes_out'])}",
            )
        )
    machine = out.get("machine")
    if machine:
        line = f"{_fmt(machine['busy_cores_during_drive'])} of {machine['cores']} cores busy during the drive"
        if machine.get("others_cores_during_drive") is not None:
            line += f", {_fmt(machine['others_cores_during_drive'])} of them other processes"
        rows.append(("machine", line))
    width = max(len(k) for k, _ in rows)
    lines = [title] + [f"  {k:<{width}}  {v}" for k, v in rows]
    for problem in out["problems"]:
        lines.append(f"  ! {problem}")
    return "\n".join(lines)
