"""Counters behind ``GET /api/admin/summary``, kept as deltas so an engine can add them
atomically with each save instead of scanning every session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
