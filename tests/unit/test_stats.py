"""Summary counters: ``delta`` per save and ``summary`` over the sums.

Sessions are driven through the real machine (as the service does: void what it asks,
decide again), so the deltas are checked on the transitions that really happen.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace

import pytest

from paylive.core.machine import (
    Cancel,
    Decision,
    EffectOutcome,
    Interrupt,
    NeedsVoid,
    ProviderResult,
    ResolveReview,
    StartAttempt,
    Tick,
    decide,
)
from paylive.core.session import Session
from paylive.core.stats import delta, summary

from ..support import core
from ..support.core import CARD, RULES, T0

PAY = T0 + 1_000
EXPIRES = T0 + RULES.session_ttl_ms

# Deadlines and retry times when every attempt times out, one after the other.
D1 = PAY + 30_000
R1 = D1 + 2_000
D2 = R1 + 30_000
R2 = D2 + 2_000
D3 = R2 + 30_000

Step = tuple[object, int, Collection[int]]  # command, when, attempts the gateway finds charged


def fresh(sid: str = "ps_stats") -> Session:
    return core.fresh(sid=sid)


def apply(s: Session, command: object, at: int, charged: Collection[int] = ()) -> Session:
    voids: dict[int, bool] = {}
    for _ in range(4):
        out = decide(s, command, at, RULES, voids)
        if isinstance(out, Decision):
            return out.session
        assert isinstance(out, NeedsVoid)
        voids.update({n: n in charged for n in out.attempts})
    raise AssertionError("decide kept asking for voids")


def live(steps: Sequence[Step], sid: str = "ps_stats") -> tuple[Session, Counter[str]]:
    """Drive a session through ``steps``, summing the deltas as an engine would."""
    s = fresh(sid)
    counters: Counter[str] = Counter(delta(None, s))
    for command, at, charged in steps:
        new = apply(s, command, at, charged)
        counters.update(delta(s, new))
        s = new
    return s, counters


def last_delta(steps: Sequence[Step]) -> dict[str, int]:
    """The delta of the last step alone."""
    s, _ = live(steps[:-1])
    command, at, charged = steps[-1]
    return delta(s, apply(s, command, at, charged))


PAYING: list[Step] = [(StartAttempt(CARD), PAY, ())]


# delta ---------------------------------------------------------------------------------


def test_a_new_session_counts_as_created() -> None:
    assert delta(None, fresh()) == {"status:created": 1}


def test_nothing_changed_is_an_empty_delta() -> None:
    s = fresh()
    assert delta(s, s) == {}


def test_a_status_change_moves_one_count() -> None:
    assert last_delta(PAYING) == {"status:created": -1, "status:processing": 1}


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        ((Tick(), D1, ()), "timeout"),
        ((ProviderResult(1, "network_error"), PAY + 10, ()), "network_error"),
        ((Interrupt("network_error"), PAY + 10, ()), "network_error"),
        ((ProviderResult(1, "declined", decline_code="card_declined"), PAY + 10, ()), "declined"),
        ((ProviderResult(1, "provider_error"), PAY + 10, ()), "provider_error"),
    ],
)
def test_an_interruption_counts_its_reason(end: Step, reason: str) -> None:
    assert last_delta([*PAYING, end]) == {
        "status:processing": -1,
        "status:interrupted": 1,
        f"interruptions:{reason}": 1,
    }


def test_an_unrecoverable_decline_counts_as_declined_and_failed() -> None:
    end: Step = (ProviderResult(1, "declined", decline_code="stolen_card"), PAY + 10, ())
    assert last_delta([*PAYING, end]) == {
        "status:processing": -1,
        "status:failed": 1,
        "interruptions:declined": 1,
    }


THREE_TIMEOUTS: list[Step] = [
    *PAYING,
    (Tick(), D1, ()),
    (StartAttempt(None), R1, ()),
    (Tick(), D2, ()),
    (StartAttempt(None), R2, ()),
]


@pytest.mark.parametrize(
    ("end", "reason"),
    [
        ((Tick(), D3, ()), "timeout"),
        ((Interrupt("network_error"), R2 + 10, ()), "network_error"),
        ((ProviderResult(3, "network_error"), R2 + 10, ()), "network_error"),
    ],
)
def test_the_last_attempt_voided_on_failing_still_counts_its_reason(end: Step, reason: str) -> None:
    # The attempt goes processing -> voided in one save: its interruption must not vanish
    # (a declined last attempt is counted, so a timed-out one must be too).
    assert last_delta([*THREE_TIMEOUTS, end]) == {
        "status:processing": -1,
        "status:failed": 1,
        f"interruptions:{reason}": 1,
    }


def test_an_attempt_timing_out_after_expiry_counts_its_timeout() -> None:
    late: list[Step] = [(StartAttempt(CARD), EXPIRES - 1_000, ()), (Tick(), EXPIRES + 29_000, ())]
    assert last_delta(late) == {
        "status:processing": -1,
        "status:expired": 1,
        "interruptions:timeout": 1,
    }


def test_cancelling_the_attempt_in_flight_is_no_interruption() -> None:
    assert last_delta([*PAYING, (Cancel(), PAY + 10, ())]) == {
        "status:processing": -1,
        "status:cancelled": 1,
    }


def test_a_late_failure_for_a_timed_out_attempt_is_not_counted_twice() -> None:
    steps: list[Step] = [
        *PAYING,
        (Tick(), D1, ()),
        (ProviderResult(1, "declined", decline_code="card_declined"), D1 + 500, ()),
    ]
    assert last_delta(steps) == {}


def test_success_at_first_attempt_is_not_recovered_by_retry() -> None:
    assert last_delta([*PAYING, (ProviderResult(1, "succeeded"), PAY + 10, ())]) == {
        "status:processing": -1,
        "status:succeeded": 1,
    }


@pytest.mark.parametrize("first_end", ["declined", "timeout"])
def test_success_of_a_retry_is_recovered_by_retry(first_end: str) -> None:
    end: Step = (
        (Tick(), D1, ())
        if first_end == "timeout"
        else (ProviderResult(1, "declined", decline_code="card_declined"), D1, ())
    )
    steps: list[Step] = [
        *PAYING,
        end,
        (StartAttempt(None), R1, ()),
        (ProviderResult(2, "succeeded"), R1 + 1_500, ()),
    ]
    assert last_delta(steps) == {
        "status:processing": -1,
        "status:succeeded": 1,
        "recovered_by_retry": 1,
    }


def test_late_success_found_by_the_void_is_not_recovered_by_retry() -> None:
    # 4000000000000523: the only attempt was charged; no retry made it succeed.
    steps: list[Step] = [
        *PAYING,
        (ProviderResult(1, "network_error"), PAY + 10, ()),
        (StartAttempt(None), PAY + 2_010, (1,)),
    ]
    assert last_delta(steps) == {"status:interrupted": -1, "status:succeeded": 1}


def test_needs_review_counts_once_per_session() -> None:
    # A success after a cancel is refunded and flags the session; a second refund later
    # must not count the session again.
    steps: list[Step] = [
        *PAYING,
        (Cancel(), PAY + 10, ()),
        (ProviderResult(1, "succeeded"), PAY + 2_000, ()),
    ]
    assert last_delta(steps) == {"needs_review": 1, "effects_pending:refund": 1}
    s, _ = live(steps)
    already = replace(s, needs_review=True, seq=s.seq + 1)
    assert delta(s, already) == {}


def test_pending_effects_and_open_reviews_follow_the_outbox() -> None:
    steps: list[Step] = [
        *PAYING,
        (Cancel(), PAY + 10, ()),
        (ProviderResult(1, "succeeded"), PAY + 2_000, ()),
        (EffectOutcome("refund", 1, False, "unavailable"), PAY + 2_100, ()),
    ]
    assert last_delta(steps) == {}  # a failed try: still pending
    steps.append((EffectOutcome("refund", 1, True), PAY + 5_000, ()))
    assert last_delta(steps) == {"effects_pending:refund": -1}
    steps.append((ResolveReview("ana", "refund confirmed"), PAY + 6_000, ()))
    assert last_delta(steps) == {"needs_review": -1}
    _, counters = live(steps)
    out = summary(counters)
    assert out["needs_review"] == 0
    assert out["effects_pending"] == {"void": 0, "refund": 0, "capture": 0}


# summary ---------------------------------------------------------------------------------


def test_summary_of_nothing() -> None:
    assert summary({}) == {
        "active": 0,
        "by_status": {
            "created": 0,
            "processing": 0,
            "interrupted": 0,
            "succeeded": 0,
            "failed": 0,
            "cancelled": 0,
            "expired": 0,
        },
        "interruptions": {"timeout": 0, "network_error": 0, "declined": 0, "provider_error": 0},
        "success_rate": None,
        "recovered_by_retry": 0,
        "needs_review": 0,
        "effects_pending": {"void": 0, "refund": 0, "capture": 0},
    }


def test_summary_from_counters() -> None:
    out = summary(
        {
            "status:created": 2,
            "status:processing": 1,
            "status:interrupted": 1,
            "status:succeeded": 2,
            "status:failed": 1,
            "interruptions:timeout": 3,
            "interruptions:declined": 1,
            "recovered_by_retry": 1,
            "needs_review": 1,
        }
    )
    assert out["active"] == 4
    assert out["by_status"]["succeeded"] == 2 and out["by_status"]["expired"] == 0
    # Succeeded over finished sessions only: active ones have no outcome yet.
    assert out["success_rate"] == 0.6667
    assert out["interruptions"] == {
        "timeout": 3,
        "network_error": 0,
        "declined": 1,
        "provider_error": 0,
    }
    assert (out["recovered_by_retry"], out["needs_review"]) == (1, 1)


def test_summary_never_shows_a_negative_status_count() -> None:
    # A count can dip below zero for a moment (say, counters reset under live sessions).
    out = summary({"status:expired": -1, "status:succeeded": 1})
    assert out["by_status"]["expired"] == 0
    assert out["success_rate"] == 1.0


def test_summary_of_many_lives_matches_what_happened() -> None:
    lives: dict[str, list[Step]] = {
        "paid_first_time": [*PAYING, (ProviderResult(1, "succeeded"), PAY + 1_500, ())],
        "declined_then_paid": [
            *PAYING,
            (ProviderResult(1, "declined", decline_code="insufficient_funds"), PAY + 1_500, ()),
            (StartAttempt(None), PAY + 3_500, ()),
            (ProviderResult(2, "succeeded"), PAY + 5_000, ()),
        ],
        "three_timeouts": [*THREE_TIMEOUTS, (Tick(), D3, ())],
        "charged_but_lost": [
            *PAYING,
            (ProviderResult(1, "network_error"), PAY + 10, ()),
            (StartAttempt(None), PAY + 2_010, (1,)),
        ],
        "cancelled_then_late_success": [
            *PAYING,
            (Cancel(), PAY + 100, ()),
            (ProviderResult(1, "succeeded"), PAY + 2_000, ()),
        ],
        "expired_unpaid": [(Tick(), EXPIRES, ())],
        "stolen_card": [
            *PAYING,
            (ProviderResult(1, "declined", decline_code="stolen_card"), PAY + 1_500, ()),
        ],
        "still_interrupted": [*PAYING, (ProviderResult(1, "provider_error"), PAY + 100, ())],
        "duplicate_webhooks": [
            *PAYING,
            (ProviderResult(1, "succeeded"), PAY + 1_500, ()),
            (ProviderResult(1, "succeeded"), PAY + 1_600, ()),
            (ProviderResult(1, "declined", decline_code="card_declined"), PAY + 1_700, ()),
        ],
    }
    total: Counter[str] = Counter()
    finals: Counter[str] = Counter()
    for name, steps in lives.items():
        s, counters = live(steps, sid=f"ps_{name}")
        total.update(counters)
        finals[s.status] += 1
    out = summary(total)
    assert out["by_status"] == {status: finals[status] for status in out["by_status"]}
    assert out["by_status"]["succeeded"] == 4
    assert out["active"] == 1
    assert out["success_rate"] == round(4 / 8, 4)
    assert out["interruptions"] == {
        "timeout": 3,
        "network_error": 1,
        "declined": 2,
        "provider_error": 1,
    }
    assert out["recovered_by_retry"] == 1
    assert out["needs_review"] == 1
    assert out["effects_pending"] == {"void": 0, "refund": 1, "capture": 0}
