"""The outcome receipt (core/receipt.py) on the real machine, without I/O: an ended
session is due for ``session.outcome_unseen`` unless a checkout acknowledges its
outcome first; the notice is made once; an acknowledgement after it is recorded."""

from __future__ import annotations

from dataclasses import replace

import pytest

from paylive.core.machine import (
    Cancel,
    Decision,
    ProviderResult,
    Rules,
    SeeOutcome,
    StartAttempt,
    Tick,
    new_session,
)
from paylive.core.merchant import OUTCOME_UNSEEN, merchant_events, queue_events
from paylive.core.session import Session

from ..support.core import CARD, decided

SID = "ps_receipt"
RULES = Rules(
    attempt_timeout_ms=30_000,
    max_attempts=3,
    retry_delay_ms=2_000,
    session_ttl_ms=60_000,
    outcome_unseen_ms=120_000,
)


def step(s: Session, command: object, now: int, rules: Rules = RULES) -> Decision:
    return decided(s, command, now, rules)


def succeeded(rules: Rules = RULES) -> Session:
    s = new_session(SID, "order-1", 500, "EUR", {}, 0, rules)
    s = step(s, StartAttempt(CARD), 100, rules).session
    return step(s, ProviderResult(1, "succeeded"), 1_000, rules).session


def cancelled() -> Session:
    s = new_session(SID, "order-2", 500, "EUR", {}, 0, RULES)
    return step(s, Cancel(), 500).session


def test_ending_a_session_sets_when_an_unseen_outcome_is_due() -> None:
    s = succeeded()
    assert s.status == "succeeded" and s.outcome_seen_at is None
    assert s.unseen_due == 1_000 + 120_000 == s.next_due()
    assert s.to_public()["outcome_seen_at"] is None
    assert "unseen_due" not in s.to_public(), "not on the wire"
    assert Session.from_record(s.to_record()) == s


def test_an_active_session_has_no_receipt_due() -> None:
    s = new_session(SID, "o", 500, "EUR", {}, 0, RULES)
    s = step(s, StartAttempt(CARD), 100).session
    assert s.unseen_due is None and s.next_due() == s.deadline


@pytest.mark.parametrize("maker", [succeeded, cancelled])
def test_an_outcome_nobody_saw_makes_session_outcome_unseen_once(maker) -> None:  # type: ignore[no-untyped-def]
    s = maker()
    due = s.unseen_due
    assert due is not None
    early = step(s, Tick(), due - 1)
    assert early.events == () and not early.to_save
    d = step(s, Tick(), due)
    (event,) = d.events
    assert event.type == "state" and event.seq == s.seq + 1
    assert event.data["cause"] == "outcome_unseen" and event.data["previous"] == s.status
    assert d.session.status == s.status and d.session.unseen_due is None
    assert d.session.next_due() is None, "nothing more is due"
    made = merchant_events(s.needs_review, d.events)
    assert [m.type for m in made] == [OUTCOME_UNSEEN]
    assert made[0].id == f"evt_receipt_{s.seq + 1}_outcome_unseen"
    assert made[0].session["status"] == s.status
    queued = queue_events(s, d, RULES).session.deliveries
    assert [q.event["type"] for q in queued] == [OUTCOME_UNSEEN]
    # The timer firing again (a lease that ran out, another worker) makes nothing.
    again = step(d.session, Tick(), due + 10_000)
    assert again.events == () and merchant_events(False, again.events) == ()


def test_an_acknowledged_outcome_is_recorded_and_never_reported_unseen() -> None:
    s = succeeded()
    d = step(s, SeeOutcome("succeeded"), 5_000)
    (event,) = d.events
    assert event.data["cause"] == "outcome_seen" and event.data["previous"] == "succeeded"
    assert event.data["session"]["outcome_seen_at"] == 5_000
    seen = d.session
    assert seen.outcome_seen_at == 5_000 and seen.unseen_due is None
    assert seen.next_due() is None
    assert merchant_events(False, d.events) == (), "no merchant event in outcomes mode"
    later = step(seen, Tick(), 10_000_000)
    assert later.events == ()
    # Acknowledged again (a second tab, a retried request): nothing changes.
    twice = step(seen, SeeOutcome("succeeded"), 6_000)
    assert twice.refusal is None and twice.events == () and not twice.to_save
    assert twice.session.outcome_seen_at == 5_000


def test_an_acknowledgement_after_the_notice_is_recorded_too() -> None:
    s = succeeded()
    notified = step(s, Tick(), s.unseen_due or 0).session
    d = step(notified, SeeOutcome("succeeded"), 200_000)
    assert d.session.outcome_seen_at == 200_000
    assert [e.data["cause"] for e in d.events] == ["outcome_seen"]
    assert merchant_events(False, d.events) == ()


def test_an_acknowledgement_must_name_the_outcome_the_session_has() -> None:
    s = succeeded()
    wrong = step(s, SeeOutcome("failed"), 5_000)
    assert wrong.refusal is not None and wrong.refusal.code == "invalid_state"
    assert wrong.session is s and not wrong.to_save
    active = new_session(SID, "o", 500, "EUR", {}, 0, RULES)
    early = step(active, SeeOutcome("succeeded"), 10)
    assert early.refusal is not None and early.refusal.code == "invalid_state"
    assert early.session is active


def test_zero_turns_the_notice_off() -> None:
    rules = replace(RULES, outcome_unseen_ms=0)
    s = succeeded(rules)
    assert s.unseen_due is None and s.next_due() is None
    assert step(s, Tick(), 10_000_000, rules).events == ()
    # An acknowledgement is still recorded.
    assert step(s, SeeOutcome("succeeded"), 2_000, rules).session.outcome_seen_at == 2_000
