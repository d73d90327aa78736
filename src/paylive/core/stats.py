"""Counters behind ``GET /api/admin/summary``, kept as deltas so an engine can add them
atomically with each save instead of scanning every session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    if new.needs_review and not (old is not None and old.needs_review):
        bump("needs_review")
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
        "needs_review": int(counters.get("needs_review", 0)),
    }
