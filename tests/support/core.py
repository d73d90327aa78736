"""The core's test values, one copy for every unit test: a card the sandbox charges,
a fixed clock, the checkout's rules, and a session just created under them.

A module whose rules differ (shorter timings, a refund policy) builds its own
``Rules`` and passes it to ``fresh``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from paylive.core.machine import Decision, Rules, decide, new_session
from paylive.core.session import Session

CARD = {"card": "4242424242424242"}  # the sandbox charges it at once
T0 = 1_764_129_990_000  # a fixed "now", in ms since the epoch
# The checkout's own timings: a 30 s attempt, three attempts, 2 s between, 15 minutes.
RULES = Rules(
    attempt_timeout_ms=30_000, max_attempts=3, retry_delay_ms=2_000, session_ttl_ms=900_000
)


def fresh(
    rules: Rules = RULES,
    *,
    sid: str = "ps_test",
    order_id: str = "order-1",
    amount: int = 500,
    metadata: Mapping[str, Any] | None = None,
    now: int = T0,
) -> Session:
    """A session just created (``created``, seq 0) in euros."""
    return new_session(sid, order_id, amount, "EUR", dict(metadata or {}), now, rules)


def decided(
    s: Session,
    command: object,
    now: int,
    rules: Rules = RULES,
    voids: Mapping[int, bool] | None = None,
) -> Decision:
    """The machine's decision on ``command``; fails the test on a refusal."""
    out = decide(s, command, now, rules, voids)  # type: ignore[arg-type]
    assert isinstance(out, Decision), f"expected a decision, got {out!r}"
    return out
