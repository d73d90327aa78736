"""Which durable transitions make which merchant events (core/merchant.py), without I/O.

Decisions come from the real machine, so the mapping is tested on the events the
machine really makes, including the voids, late successes and refunds.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from paylive.core.codec import Message
from paylive.core.machine import (
    Cancel,
    Decision,
    NeedsVoid,
    ProviderResult,
    Rules,
    StartAttempt,
    Tick,
    decide,
    new_session,
)
from paylive.core.merchant import (
    CANCELLED,
    EXPIRED,
    FAILED,
    NEEDS_REVIEW,
    REFUNDED,
    REVIEW_RESOLVED,
    SUCCEEDED,
    UPDATED,
    MerchantEvent,
    event_id,
    merchant_events,
)
from paylive.core.session import Session

RULES = Rules(attempt_timeout_ms=1_000, max_attempts=2, retry_delay_ms=0, session_ttl_ms=10_000)
T0 = 1_764_000_000_000
CARD = {"card": "4242424242424242"}


def fresh() -> Session:
    return new_session("ps_m1", "order-1", 500, "EUR", {}, T0, RULES)


def run(s: Session, command: object, now: int, voids: dict[int, bool] | None = None) -> Decision:
    result = decide(s, command, now, RULES, voids or {})  # type: ignore[arg-type]
    if isinstance(result, NeedsVoid):
        result = decide(s, command, now, RULES, {n: False for n in result.attempts} | (voids or {}))  # type: ignore[arg-type]
    assert isinstance(result, Decision)
    return result


def events_of(before: Session, d: Decision, mode: str = "outcomes") -> list[MerchantEvent]:
    return list(merchant_events(before.needs_review, d.events, mode))


def types(before: Session, d: Decision, mode: str = "outcomes") -> list[str]:
    return [e.type for e in events_of(before, d, mode)]


def paying() -> Session:
    return run(fresh(), StartAttempt(CARD), T0 + 10).session


def test_success_makes_one_succeeded_event_with_the_session_and_its_seq() -> None:
    s = paying()
    d = run(s, ProviderResult(1, "succeeded", provider_ref="r1"), T0 + 20)
    [event] = events_of(s, d)
    assert event.type == SUCCEEDED
    assert event.seq == d.session.seq == d.events[-1].seq
    assert event.session == d.session.to_public()
    assert event.created == T0 + 20
    assert event.cause == "succeeded" and event.previous == "processing"
    assert event.id == event_id("ps_m1", event.seq, SUCCEEDED) == f"evt_m1_{event.seq}_succeeded"


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (Cancel(), CANCELLED),
        (ProviderResult(1, "declined", decline_code="stolen_card"), FAILED),
    ],
)
def test_ends_without_money(command: object, expected: str) -> None:
    s = paying()
    d = run(s, command, T0 + 20)
    assert types(s, d) == [expected]


def test_expiry_and_last_failed_attempt() -> None:
    s = fresh()
    assert types(s, run(s, Tick(), T0 + 10_000)) == [EXPIRED]
    s = paying()
    d = run(s, ProviderResult(1, "declined", decline_code="card_declined"), T0 + 20)
    assert d.session.status == "interrupted" and types(s, d) == []
    s2 = run(d.session, StartAttempt(), T0 + 30).session
    assert types(s2, run(s2, ProviderResult(2, "provider_error"), T0 + 40)) == [FAILED]


def test_intermediate_changes_are_silent_unless_all() -> None:
    s = fresh()
    d = run(s, StartAttempt(CARD), T0 + 10)
    assert types(s, d) == []
    assert types(s, d, "all") == [UPDATED]
    s = d.session
    d = run(s, Tick(), T0 + 10 + RULES.attempt_timeout_ms)  # timeout: interrupted
    assert d.session.status == "interrupted"
    # The retry prompt is durable too, but only state events make merchant events.
    assert len(d.events) == 2 and types(s, d, "all") == [UPDATED]


def test_all_mode_keeps_outcome_types_for_outcomes() -> None:
    s = paying()
    d = run(s, ProviderResult(1, "succeeded"), T0 + 20)
    assert types(s, d, "all") == [SUCCEEDED]


def test_success_after_the_end_is_refunded_and_needs_review() -> None:
    s = paying()
    cancelled = run(s, Cancel(), T0 + 20).session
    d = run(cancelled, ProviderResult(1, "succeeded"), T0 + 30)
    assert d.session.needs_review
    events = events_of(cancelled, d)
    assert [e.type for e in events] == [REFUNDED, NEEDS_REVIEW]
    assert {e.seq for e in events} == {d.session.seq}
    assert len({e.id for e in events}) == 2
    assert events[0].cause == "late_success_refunded"


def test_second_refund_while_already_in_review_is_no_new_review() -> None:
    s = paying()
    cancelled = run(s, Cancel(), T0 + 20).session
    reviewed = run(cancelled, ProviderResult(1, "succeeded"), T0 + 30).session
    assert reviewed.needs_review
    # A webhook for the same success again changes nothing: no event at all.
    again = run(reviewed, ProviderResult(1, "succeeded"), T0 + 40)
    assert types(reviewed, again) == []


def test_void_that_finds_the_money_moved_succeeds() -> None:
    s = run(paying(), ProviderResult(1, "network_error"), T0 + 20).session
    assert s.status == "interrupted"
    d = run(s, Cancel(), T0 + 30, {1: True})
    assert d.session.status == "succeeded"
    assert types(s, d) == [SUCCEEDED]


def test_duplicate_charge_is_a_success_then_a_refund() -> None:
    s = run(paying(), ProviderResult(1, "network_error"), T0 + 20).session
    s = run(s, StartAttempt(), T0 + 30, {1: False}).session
    # Attempt 1 was voided as not charged; the void was wrong: both succeed.
    s = replace(s, attempts=(replace(s.attempts[0], status="timeout"), s.attempts[1]))
    d = run(s, ProviderResult(2, "succeeded"), T0 + 40, {1: True})
    # The machine flags the review with the success (seq + 1), then names the refund.
    assert types(s, d) == [SUCCEEDED, NEEDS_REVIEW, REFUNDED]
    assert [e.seq for e in events_of(s, d)] == [s.seq + 1, s.seq + 1, s.seq + 2]


def test_review_resolved_when_needs_review_goes_back_to_false() -> None:
    before = replace(paying(), needs_review=True, status="cancelled")
    after = replace(before, needs_review=False, seq=before.seq + 1)
    message = Message(
        "state",
        {"session": after.to_public(), "previous": "cancelled", "cause": "review_resolved"},
        after.id,
        after.seq,
        T0 + 99,
    )
    [event] = merchant_events(True, [message])
    assert event.type == REVIEW_RESOLVED and event.cause == "review_resolved"


def test_the_body_is_the_wire_form() -> None:
    s = paying()
    [event] = events_of(s, run(s, Cancel(), T0 + 20))
    wire = json.loads(event.body())
    assert set(wire) == {"id", "type", "created", "session", "seq", "cause", "previous"}
    assert wire["session"]["status"] == "cancelled"
