"""Which durable transitions make which merchant events (core/merchant.py), without I/O.

Decisions come from the real machine, so the mapping is tested on the events the
machine really makes, including the voids, late successes and refunds.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from paylive.core.machine import (
    Cancel,
    Decision,
    EffectOutcome,
    NeedsVoid,
    ProviderResult,
    ResolveReview,
    Rules,
    StartAttempt,
    Tick,
    decide,
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
    queue_events,
)
from paylive.core.session import Session

from ..support import core
from ..support.core import CARD

RULES = Rules(attempt_timeout_ms=1_000, max_attempts=2, retry_delay_ms=0, session_ttl_ms=10_000)
T0 = 1_764_000_000_000


def fresh() -> Session:
    return core.fresh(RULES, sid="ps_m1", now=T0)


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


def late_success() -> tuple[Session, Decision]:
    """Paid, cancelled, then the provider reports the success: money to give back."""
    s = run(fresh(), StartAttempt(CARD), T0 + 10).session
    cancelled = run(s, Cancel(), T0 + 20).session
    result = decide(cancelled, ProviderResult(1, "succeeded"), T0 + 30, RULES, {})
    assert isinstance(result, Decision)
    return cancelled, result


def confirm(s: Session, kind: str, now: int, **answer: Any) -> Decision:
    d = decide(s, EffectOutcome(kind, 1, answer.pop("ok", True), **answer), now, RULES, {})
    assert isinstance(d, Decision)
    return d


def test_a_late_success_needs_review_at_once_and_is_refunded_on_confirmation() -> None:
    cancelled, d = late_success()
    assert d.session.needs_review and types(cancelled, d) == [NEEDS_REVIEW]
    # A failed try at the refund says nothing to the shop (and is no durable event).
    failed = confirm(d.session, "refund", T0 + 40, ok=False, error="busy")
    assert failed.events == () and types(d.session, failed) == []
    done = confirm(failed.session, "refund", T0 + 50)
    [event] = events_of(failed.session, done)
    assert event.type == REFUNDED and event.cause == "effect_done"
    assert event.seq == done.session.seq and event.created == T0 + 50
    assert event.effect is not None and event.effect["id"] == "ps_m1:1:refund"
    assert json.loads(event.body())["effect"]["kind"] == "refund"
    # Confirmed again (a repeated try): answered already, nothing new.
    assert types(done.session, confirm(done.session, "refund", T0 + 60)) == []


def test_a_hold_released_is_no_refund_but_money_a_release_finds_taken_is() -> None:
    cancelled = run(paying(), Cancel(), T0 + 20).session
    # The provider holds the money after all: released through the outbox.
    held = run(cancelled, ProviderResult(1, "authorized"), T0 + 30)
    assert held.events == () and [e.kind for e in held.session.pending_effects] == ["void"]
    released = confirm(held.session, "void", T0 + 40)
    assert types(held.session, released) == []  # nothing moved: nothing to tell
    # The release found the money taken: a late success, given back by refund.
    taken = confirm(held.session, "void", T0 + 40, charged=True)
    assert types(held.session, taken) == [NEEDS_REVIEW]
    assert [e.kind for e in taken.session.pending_effects] == ["refund"]
    assert types(taken.session, confirm(taken.session, "refund", T0 + 50)) == [REFUNDED]


def test_second_report_of_a_success_in_review_is_no_new_event() -> None:
    _, d = late_success()
    again = run(d.session, ProviderResult(1, "succeeded"), T0 + 40)
    assert types(d.session, again) == []


def test_void_that_finds_the_money_moved_succeeds() -> None:
    s = run(paying(), ProviderResult(1, "network_error"), T0 + 20).session
    assert s.status == "interrupted"
    d = run(s, Cancel(), T0 + 30, {1: True})
    assert d.session.status == "succeeded"
    assert types(s, d) == [SUCCEEDED]


def test_duplicate_charge_is_a_success_in_review_then_a_refund() -> None:
    s = run(paying(), ProviderResult(1, "network_error"), T0 + 20).session
    s = run(s, StartAttempt(), T0 + 30, {1: False}).session
    # Attempt 1 was voided as not charged; the void was wrong: both succeed.
    s = replace(s, attempts=(replace(s.attempts[0], status="timeout"), s.attempts[1]))
    d = run(s, ProviderResult(2, "succeeded"), T0 + 40, {1: True})
    # The machine flags the review with the success; the refund is named when confirmed.
    assert types(s, d) == [SUCCEEDED, NEEDS_REVIEW]
    assert [e.seq for e in events_of(s, d)] == [s.seq + 1, s.seq + 1]
    assert types(d.session, confirm(d.session, "refund", T0 + 50)) == [REFUNDED]


def test_review_resolved_by_staff_once_the_refund_is_confirmed() -> None:
    _, d = late_success()
    refused = decide(d.session, ResolveReview("ana", "x"), T0 + 40, RULES, {})
    assert isinstance(refused, Decision) and refused.refusal is not None
    assert types(d.session, refused) == []
    done = confirm(d.session, "refund", T0 + 50).session
    resolved = decide(done, ResolveReview("ana", "refund made"), T0 + 60, RULES, {})
    assert isinstance(resolved, Decision)
    [event] = events_of(done, resolved)
    assert event.type == REVIEW_RESOLVED and event.cause == "review_resolved"
    assert event.session["needs_review"] is False


def test_queued_in_the_outbox_with_the_decision_in_order() -> None:
    cancelled, d = late_success()
    queued = queue_events(cancelled, d, RULES)
    assert [q.event["type"] for q in queued.session.deliveries] == [NEEDS_REVIEW]
    [item] = queued.session.deliveries
    assert item.next_at == item.since == T0 + 30 and not item.listed
    assert queued.session.next_effect_at() == T0 + 30
    assert queued.events == d.events and queued.session.owes
    # The next decision's events go behind it.
    done = confirm(queued.session, "refund", T0 + 50)
    later = queue_events(queued.session, done, RULES)
    assert [q.event["type"] for q in later.session.deliveries] == [NEEDS_REVIEW, REFUNDED]
    # A decision that makes none is left as it is.
    assert queue_events(done.session, Decision(done.session), RULES) == Decision(done.session)


def test_the_body_is_the_wire_form() -> None:
    s = paying()
    [event] = events_of(s, run(s, Cancel(), T0 + 20))
    wire = json.loads(event.body())
    assert set(wire) == {"id", "type", "created", "session", "seq", "cause", "previous"}
    assert wire["session"]["status"] == "cancelled"
