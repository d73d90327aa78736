"""One worker process's counters, and the result it sends to the parent after the drive.

The parent merges these results (``report.merge``); the shape of ``worker_result`` is
the contract between the two.
"""

from __future__ import annotations

import resource
from array import array
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .config import Config
from .records import Customer, FeedRecord, Tracked

# What every worker counts of the events it saw; the report adds them up by name.
EVENT_COUNTERS = (
    "sent",
    "received",
    "lost",
    "extra",
    "gaps",
    "out_of_order",
    "states",
    "states_unobserved",
    "seq_jumps_missed",
)


def cpu_seconds() -> tuple[float, float]:
    """This process's user and system CPU seconds."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


@dataclass
class SocketCounts:
    opened: Counter[str] = field(default_factory=Counter)  # initial, replacement, reconnect
    open_failed: Counter[str] = field(default_factory=Counter)
    close_codes: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    replaced: int = 0
    held_at_end: int = 0
    retired_closed: int = 0  # closed by the generator because their session ended
    # When (epoch s) the server closed a socket, and when its customer first tried to
    # come back.
    closed_at: array[float] = field(default_factory=lambda: array("d"))
    reconnect_tried_at: array[float] = field(default_factory=lambda: array("d"))


@dataclass
class ChangeCounts:
    scheduled: int = 0
    sent: int = 0
    ok: int = 0
    conflicts: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    skipped_busy: int = 0
    skipped_idle: int = 0
    late: int = 0
    max_lag_s: float = 0.0
    peak_inflight: int = 0
    http_ms: array[float] = field(default_factory=lambda: array("d"))
    refused_ms: array[float] = field(default_factory=lambda: array("d"))  # the 503 answers alone
    # How late a 10 ms timer ran in this generator process during the drive: an answer
    # is timed by this loop, so its own backlog is part of every latency it reports.
    loop_lag_ms: array[float] = field(default_factory=lambda: array("d"))


@dataclass
class PollCounts:
    polls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    delay_ms: array[float] = field(default_factory=lambda: array("d"))  # answer - updated_at


@dataclass
class Tally:
    """Every counter of one worker process; each piece writes its own part."""

    create_errors: Counter[str] = field(default_factory=Counter)
    sockets: SocketCounts = field(default_factory=SocketCounts)
    changes: ChangeCounts = field(default_factory=ChangeCounts)
    poll: PollCounts = field(default_factory=PollCounts)
    types: Counter[str] = field(default_factory=Counter)
    latency: array[float] = field(default_factory=lambda: array("d"))  # ms, ts to receipt
    admin_latency: array[float] = field(default_factory=lambda: array("d"))
    phase_ms: dict[str, float] = field(default_factory=dict)
    drive_cpu: tuple[float, float] = (0.0, 0.0)
    open_files: int = 0


def count_events(sessions: Iterable[Tracked]) -> tuple[int, dict[str, int]]:
    """Sessions counted, and their events: owed (sent), received, lost and the rest.

    A session counts once its observer saw it and the server's final seq is known;
    it owes every seq after its first snapshot up to the final one.
    """
    totals = dict.fromkeys(
        EVENT_COUNTERS,
        0,
    )
    counted = 0
    for s in sessions:
        if not s.observed or s.final is None or s.base is None:
            continue
        counted += 1
        owed = max(0, s.final - s.base)
        got = sum(1 for seq in s.seen if s.base < seq <= s.final)
        totals["sent"] += owed
        totals["received"] += got
        totals["lost"] += owed - got
        totals["extra"] += sum(1 for seq in s.seen if seq > s.final)
        totals["gaps"] += s.gaps
        totals["out_of_order"] += s.disorder
        totals["seq_jumps_missed"] += s.missed
        reached = {seq for seq in s.states if seq > s.base}
        totals["states"] += len(reached)
        totals["states_unobserved"] += len(reached - s.seen)
    return counted, totals


def _rounded(values: Iterable[float], digits: int = 2) -> list[float]:
    return [round(x, digits) for x in values]


def worker_result(
    conf: Config,
    tally: Tally,
    sessions: list[Tracked],
    customers: list[Customer],
    feeds: list[FeedRecord],
) -> dict[str, Any]:
    """The process's observations as one JSON-able document."""
    counted, totals = count_events(sessions)
    events: dict[str, Any] = {**totals, "by_type": dict(tally.types)}
    sk, ch = tally.sockets, tally.changes
    user, system = cpu_seconds()
    out: dict[str, Any] = {
        "index": conf.index,
        "open_files": tally.open_files,
        "phase_ms": tally.phase_ms,
        "sessions": {
            "created": len(sessions),
            "create_errors": dict(tally.create_errors),
            "counted": counted,
        },
        "sockets": {
            "opened": sk.opened["initial"],
            "replacements_opened": sk.opened["replacement"],
            "reconnected": sk.opened["reconnect"],
            "failures": dict(sk.open_failed),
            "closed_unexpectedly": sum(
                v for k, v in sk.close_codes.items() if not k.startswith("admin")
            ),
            "close_codes": dict(sk.close_codes),
            "reconnects": sk.reconnects,
            "replaced": sk.replaced,
            "held_at_end": sk.held_at_end,
            "closed_after_session_end": sk.retired_closed,
            "closed_at": _rounded(sk.closed_at, 3),
            "reconnect_tried_at": _rounded(sk.reconnect_tried_at, 3),
        },
        "changes": {
            "scheduled": ch.scheduled,
            "sent": ch.sent,
            "ok": ch.ok,
            "conflicts": dict(ch.conflicts),
            "errors": dict(ch.errors),
            "skipped_busy": ch.skipped_busy,
            "skipped_no_session": ch.skipped_idle,
            "late_100ms": ch.late,
            "peak_in_flight": ch.peak_inflight,
            "max_lag_ms": round(ch.max_lag_s * 1000, 1),
            "http_ms": _rounded(ch.http_ms),
            "refused_ms": _rounded(ch.refused_ms),
            "loop_lag_ms": _rounded(ch.loop_lag_ms),
        },
        "events": events,
        "latency_ms": _rounded(tally.latency),
        "cpu": {
            "user_s": user,
            "sys_s": system,
            "drive_user_s": tally.drive_cpu[0],
            "drive_sys_s": tally.drive_cpu[1],
        },
    }
    if conf.mode == "poll":
        out["poll"] = {
            "clients": len(customers),
            "polls": tally.poll.polls,
            "errors": dict(tally.poll.errors),
            "skipped_rounds": tally.poll.skipped,
            "delay_ms": _rounded(tally.poll.delay_ms, 1),
        }
    if feeds or conf.admins:
        out["admin"] = {
            "requested": conf.admins,
            "opened": len(feeds),
            "feeds": [f.as_dict() for f in feeds],
            "latency_ms": _rounded(tally.admin_latency),
        }
    if conf.report_finals:
        out["finals"] = {s.id: s.final for s in sessions if s.final is not None}
    return out
