"""Counters behind ``GET /api/admin/summary``, kept as deltas so an engine can add them
atomically with each save instead of scanning every session."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .codec import Message
from .effects import KINDS
from .session import (
    A_PROCESSING,
    ACTIVE_STATUSES,
    INTERRUPTION_REASONS,
    STATUSES,
    SUCCEEDED,
    TERMINAL_STATUSES,
    Session,
)

_REASON_OF = {
    "timeout": "timeout",
    "network_error": "network_error",
    "declined": "declined",
    "provider_error": "provider_error",
}


def delta(old: Session | None, new: Session) -> dict[str, int]:
    """Counter changes from ``old`` to ``new`` (``old`` None for a new session)."""
    out: dict[str, int] = {}

    def bump(name: str, by: int = 1) -> None:
        out[name] = out.get(name, 0) + by

    if old is None or old.status != new.status:
        if old is not None:
            bump(f"status:{old.status}", -1)
        bump(f"status:{new.status}")
    before = {a.number: a.status for a in old.attempts} if old is not None else {}
    ended = new.last_error or {}
    for attempt in new.attempts:
        if before.get(attempt.number) != A_PROCESSING:
            continue
        reason = _REASON_OF.get(attempt.status)
        if reason is None and ended.get("attempt") == attempt.number:
            # Ended and voided (or found charged) in the same save, as when the last
            # attempt times out: last_error still says why it ended.
            reason = _REASON_OF.get(ended.get("reason", ""))
        if reason is not None:
            bump(f"interruptions:{reason}")
    if new.status == SUCCEEDED and (old is None or old.status != SUCCEEDED):
        if any(a.status != A_PROCESSING and a.status != "succeeded" for a in new.attempts):
            bump("recovered_by_retry")
    # Open reviews: flagged adds one, resolved takes it away.
    was_flagged = old is not None and old.needs_review
    if new.needs_review != was_flagged:
        bump("needs_review", 1 if new.needs_review else -1)
    before_pending = old.pending_effects if old is not None else ()
    for kind in KINDS:
        change = sum(e.kind == kind for e in new.pending_effects) - sum(
            e.kind == kind for e in before_pending
        )
        if change:
            bump(f"effects_pending:{kind}", change)
    # Merchant events owed to the shop: the metric of pending deliveries.
    bump("deliveries_pending", len(new.deliveries) - (len(old.deliveries) if old else 0))
    return {k: v for k, v in out.items() if v}


def summary(counters: Mapping[str, int]) -> dict[str, Any]:
    """The summary map of docs/protocol.md section 3 from the stored counters."""
    by_status = {status: max(0, int(counters.get(f"status:{status}", 0))) for status in STATUSES}
    finished = sum(by_status[s] for s in TERMINAL_STATUSES)
    return {
        "active": sum(by_status[s] for s in ACTIVE_STATUSES),
        "by_status": by_status,
        "interruptions": {
            reason: int(counters.get(f"interruptions:{reason}", 0))
            for reason in INTERRUPTION_REASONS
        },
        "success_rate": round(by_status[SUCCEEDED] / finished, 4) if finished else None,
        "recovered_by_retry": int(counters.get("recovered_by_retry", 0)),
        "needs_review": max(0, int(counters.get("needs_review", 0))),
        "effects_pending": {
            kind: max(0, int(counters.get(f"effects_pending:{kind}", 0))) for kind in KINDS
        },
    }


# The dashboard's chart (docs/protocol.md 8.3): durable state changes and interruptions
# per minute, counted in the same counters, one pair of fields per minute.
MINUTE_MS = 60_000
CHART_MINUTES = 60
_MINUTE = "minute:"
# A state event with one of these causes is an interruption, as the dashboard counts.
INTERRUPTION_CAUSES = frozenset(INTERRUPTION_REASONS)


def minute_delta(events: Sequence[Message]) -> dict[str, int]:
    """Counter changes for the chart from one decision's durable events."""
    out: dict[str, int] = {}
    for event in events:
        if event.type != "state":
            continue
        minute = event.ts // MINUTE_MS
        name = f"{_MINUTE}{minute}:changes"
        out[name] = out.get(name, 0) + 1
        if event.data.get("cause") in INTERRUPTION_CAUSES:
            name = f"{_MINUTE}{minute}:interruptions"
            out[name] = out.get(name, 0) + 1
    return out


def _minute_of(name: str) -> int | None:
    if not name.startswith(_MINUTE):
        return None
    raw = name[len(_MINUTE) :].partition(":")[0]
    return int(raw) if raw.isdigit() else None


def chart(counters: Mapping[str, int], now: int, minutes: int = CHART_MINUTES) -> dict[str, Any]:
    """The last ``minutes`` minutes up to ``now``, oldest first: for each, its start
    (epoch ms) and its counts."""
    last = now // MINUTE_MS
    series = []
    for minute in range(last - minutes + 1, last + 1):
        series.append(
            {
                "at": minute * MINUTE_MS,
                "changes": max(0, int(counters.get(f"{_MINUTE}{minute}:changes", 0))),
                "interruptions": max(0, int(counters.get(f"{_MINUTE}{minute}:interruptions", 0))),
            }
        )
    return {"minutes": series}


def stale_minutes(counters: Mapping[str, int], now: int, minutes: int = CHART_MINUTES) -> list[str]:
    """The chart's counters older than the window (with a minute to spare for clocks
    a little apart): the summary loop deletes them."""
    oldest = now // MINUTE_MS - minutes
    return [name for name in counters if (m := _minute_of(name)) is not None and m < oldest]
