"""Refunds asked for and effects done by hand, in the pure machine (core/refunds.py,
core/outbox.py, core/merchant.py): what a refund decision writes, what it refuses,
the merchant events it makes once confirmed, and, with Hypothesis, that the refunds
decided never add up to more than the payment. No I/O."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from paylive.core.machine import (
    Cancel,
    Decision,
    EffectOutcome,
    MarkDone,
    ProviderResult,
    Refund,
    ResolveReview,
    Rules,
    StartAttempt,
    decide,
    new_session,
)
from paylive.core.merchant import (
    PARTIALLY_REFUNDED,
    REFUNDED,
    merchant_events,
    queue_events,
)
from paylive.core.session import Session

from ..support.core import CARD, decided

RULES = Rules(
    attempt_timeout_ms=1_000,
    max_attempts=3,
    retry_delay_ms=0,
    session_ttl_ms=60_000,
    effect_review_after_ms=30_000,
)

SID = "ps_refunds"


def step(s: Session, command: object, now: int) -> Decision:
    return decided(s, command, now, RULES)


def paid(amount: int = 100) -> Session:
    s = new_session(SID, "order-1", amount, "EUR", {}, 0, RULES)
    s = step(s, StartAttempt(CARD), 10).session
    s = step(s, ProviderResult(1, "succeeded", provider_ref="sbx_1"), 20).session
    assert s.status == "succeeded"
    return s


def confirm(s: Session, number: int, now: int) -> Decision:
    return step(s, EffectOutcome("refund", 1, True, number=number), now)


def test_a_refund_is_an_effect_saved_with_its_decision() -> None:
    s = paid()
    d = step(s, Refund(30, "one item returned", "merchant"), 100)
    assert d.refusal is None
    [effect] = d.session.effects
    assert (effect.kind, effect.attempt, effect.number, effect.amount) == ("refund", 1, 1, 30)
    assert effect.pending and effect.next_at == 100
    assert effect.key(SID) == f"{SID}:1:refund.1"
    assert [e.data["cause"] for e in d.events] == ["refund_requested"]
    assert d.session.status == "succeeded" and not d.session.needs_review
    public = d.session.to_public()
    assert public["amount_refunded"] == 0, "decided, not yet confirmed by the provider"
    assert public["refunds"][0]["status"] == "pending"


def test_30_then_70_refunds_in_full_and_a_third_is_refused() -> None:
    s = paid()
    s = step(s, Refund(30, None, "merchant"), 100).session
    s = step(s, Refund(None, None, "merchant"), 110).session  # what remains: 70
    assert [e.amount for e in s.refunds] == [30, 70]
    third = step(s, Refund(None, None, "merchant"), 120)
    assert third.refusal is not None and third.refusal.code == "refund_exceeds_captured"
    assert third.session is s, "a refusal changes nothing"
    one_more = step(s, Refund(1, None, "merchant"), 120)
    assert one_more.refusal is not None and one_more.refusal.code == "refund_exceeds_captured"


def test_more_than_remains_is_refused() -> None:
    s = step(paid(), Refund(60, None, "merchant"), 100).session
    d = step(s, Refund(60, None, "merchant"), 110)
    assert d.refusal is not None and d.refusal.code == "refund_exceeds_captured"
    assert "40" in d.refusal.message


@pytest.mark.parametrize("setup", ["created", "processing", "cancelled"])
def test_an_unpaid_session_is_not_refunded(setup: str) -> None:
    s = new_session(SID, "order-1", 100, "EUR", {}, 0, RULES)
    if setup == "processing":
        s = step(s, StartAttempt(CARD), 10).session
    if setup == "cancelled":
        s = step(s, Cancel(), 10).session
    d = step(s, Refund(None, None, "merchant"), 100)
    assert d.refusal is not None and d.refusal.code == "not_paid"
    assert not d.events


def test_confirmed_refunds_make_partial_then_full_merchant_events() -> None:
    s = paid()
    s = step(s, Refund(30, "returned", "merchant"), 100).session
    s = step(s, Refund(70, None, "alice"), 110).session
    first = confirm(s, 1, 200)
    events = merchant_events(False, first.events)
    assert [e.type for e in events] == [PARTIALLY_REFUNDED]
    assert events[0].refund == {
        "id": f"{SID}:1:refund.1",
        "amount": 30,
        "amount_refunded": 30,
        "reason": "returned",
    }
    s = first.session
    assert s.amount_refunded == 30
    second = confirm(s, 2, 210)
    events = merchant_events(False, second.events)
    assert [e.type for e in events] == [REFUNDED]
    assert events[0].refund is not None and events[0].refund["amount_refunded"] == 100
    assert events[0].to_wire()["refund"]["amount"] == 70
    assert second.session.amount_refunded == 100


def test_the_automatic_refund_keeps_its_event_as_it_was() -> None:
    """A second charge's refund is session.refunded with its effect, and no refund
    details: the session's own payment stands (docs/protocol.md 6)."""
    s = new_session(SID, "order-1", 100, "EUR", {}, 0, RULES)
    s = step(s, StartAttempt(CARD), 10).session
    cancelled = decide(s, Cancel(), 20, RULES, {1: False})
    assert isinstance(cancelled, Decision)
    s = step(cancelled.session, ProviderResult(1, "succeeded"), 30).session  # late: given back
    assert [e.number for e in s.effects] == [0]
    d = step(s, EffectOutcome("refund", 1, True), 40)
    events = merchant_events(True, d.events)
    assert [e.type for e in events] == [REFUNDED]
    assert events[0].refund is None and "refund" not in events[0].to_wire()
    assert events[0].effect is not None and events[0].effect["kind"] == "refund"


def test_a_refund_is_queued_for_the_shop_only_when_confirmed() -> None:
    s = paid()
    d = step(s, Refund(30, None, "merchant"), 100)
    assert not queue_events(s, d, RULES).session.deliveries[1:], "no event for the decision"
    s = queue_events(s, d, RULES).session
    confirmed = confirm(s, 1, 200)
    queued = queue_events(s, confirmed, RULES).session.deliveries
    assert queued[-1].event["type"] == PARTIALLY_REFUNDED


def test_a_failed_try_is_written_on_that_refund_alone() -> None:
    s = step(paid(), Refund(30, None, "merchant"), 100).session
    s = step(s, Refund(20, None, "merchant"), 101).session
    d = step(s, EffectOutcome("refund", 1, False, "down", 0.0, number=2), 200)
    one, two = d.session.refunds
    assert (one.tries, two.tries) == (0, 1) and two.last_error == "down"
    assert one.pending and two.pending and not d.events


def test_done_by_hand_stops_retrying_and_unblocks_the_review() -> None:
    s = step(paid(), Refund(30, None, "merchant"), 100).session
    # Still refused by the provider past the review time: flagged.
    s = step(s, EffectOutcome("refund", 1, False, "refused", 0.0, number=1), 40_000).session
    assert s.needs_review
    blocked = step(s, ResolveReview("alice", "done"), 40_001)
    assert blocked.refusal is not None and blocked.refusal.code == "effects_pending"
    d = step(s, MarkDone("refund", 1, 1, "alice", "refunded in the provider's dashboard"), 41_000)
    assert d.refusal is None
    [effect] = d.session.refunds
    assert effect.status == "done" and effect.next_at is None
    assert (effect.done_by, effect.note) == ("alice", "refunded in the provider's dashboard")
    assert d.events[0].data["by_hand"] is True
    assert d.session.next_effect_at() is None, "nothing is due any more"
    assert d.session.amount_refunded == 30
    again = step(d.session, MarkDone("refund", 1, 1, "alice", "again"), 41_001)
    assert again.refusal is not None and again.refusal.code == "invalid_state"
    resolved = step(d.session, ResolveReview("alice", "refunded by hand"), 41_002)
    assert resolved.refusal is None and not resolved.session.needs_review
    # A late answer of a try in flight changes nothing now.
    late = step(d.session, EffectOutcome("refund", 1, True, number=1), 41_003)
    assert late.session is d.session and not late.events


def test_done_by_hand_of_an_unknown_effect_is_refused() -> None:
    d = step(paid(), MarkDone("refund", 1, 1, "alice", "x"), 100)
    assert d.refusal is not None and d.refusal.code == "unknown_effect"


def test_a_session_with_refunds_reads_back_from_its_record() -> None:
    s = step(paid(), Refund(30, "why", "bob"), 100).session
    back = Session.from_record(s.to_record())
    assert back.refunds == s.refunds and back.to_public() == s.to_public()
    assert "refunds" not in paid().to_public(), "a session without refunds is unchanged"


@settings(max_examples=200, deadline=None)
@given(
    amount=st.integers(1, 10_000),
    asks=st.lists(
        st.tuples(st.one_of(st.none(), st.integers(-5, 12_000)), st.booleans()), max_size=12
    ),
)
def test_refunds_never_add_up_to_more_than_the_payment(
    amount: int, asks: list[tuple[int | None, bool]]
) -> None:
    s = paid(amount)
    now = 100
    for ask, confirm_it in asks:
        now += 1
        d = decide(s, Refund(ask, None, "merchant"), now, RULES)
        assert isinstance(d, Decision)
        if d.refusal is None:
            assert ask is None or 1 <= ask
        s = d.session
        if confirm_it and s.refunds and s.refunds[-1].pending:
            s = confirm(s, s.refunds[-1].number, now).session
        decided = sum(e.amount or 0 for e in s.refunds)
        assert decided <= amount
        assert 0 <= s.amount_refunded <= decided
        assert s.refundable == amount - decided
    numbers = [e.number for e in s.refunds]
    assert numbers == list(range(1, len(numbers) + 1))


def test_the_same_request_again_finds_its_refund_and_decides_nothing() -> None:
    """A refund asked again by the request that decided it (same Idempotency-Key and
    body, its kept answer lost) is that refund, even once what remains would refuse
    it; another request is another refund."""
    s = paid()
    first = step(s, Refund(30, None, "merchant", request="req-a"), 100)
    again = step(first.session, Refund(30, None, "merchant", request="req-a"), 110)
    assert not again.to_save and again.refusal is None
    assert [e.amount for e in again.session.refunds] == [30]
    other = step(first.session, Refund(70, None, "merchant", request="req-b"), 120)
    assert [e.amount for e in other.session.refunds] == [30, 70]
    # In full now: the first request retried is still answered with its refund.
    late = step(other.session, Refund(30, None, "merchant", request="req-a"), 130)
    assert late.refusal is None and not late.to_save
    # The request is in the record (it survives a save), in no answer.
    [made, _] = other.session.refunds
    assert made.to_record()["request"] == "req-a"
    assert "request" not in made.to_public(SID)


def test_keyed_staff_actions_that_changed_the_session_are_answered_with_it_again() -> None:
    """Their kept answer lost (docs/protocol.md 3.1), the same keyed "done by hand" or
    review again finds what it did: the session as it stands, nothing decided or saved
    (before: "the effect is done already", "does not need review"). Another key, or the
    same key and note on another effect, is another request, decided as ever."""
    s = step(paid(), Refund(30, None, "merchant"), 100).session
    s = step(s, Refund(20, None, "merchant"), 110).session
    s = step(s, EffectOutcome("refund", 1, False, "refused", 0.0, number=1), 40_000).session
    assert s.needs_review
    done = step(s, MarkDone("refund", 1, 1, "alice", "by hand", "req-d"), 41_000).session
    assert done.asked == (("done refund:1:1", "req-d", ""),)
    again = step(done, MarkDone("refund", 1, 1, "alice", "by hand", "req-d"), 41_100)
    assert (again.refusal, again.session, again.to_save) == (None, done, False)
    other = step(done, MarkDone("refund", 1, 1, "alice", "by hand", "req-e"), 41_100)
    assert other.refusal is not None and other.refusal.code == "invalid_state"
    second = step(done, MarkDone("refund", 1, 2, "alice", "by hand", "req-d"), 41_200)
    assert second.refusal is None and second.to_save, "the second refund is another effect"
    done = second.session
    assert [e.status for e in done.refunds] == ["done", "done"]

    resolved = step(done, ResolveReview("alice", "made by hand", "req-r"), 42_000).session
    assert not resolved.needs_review
    assert resolved.asked[-1] == ("review", "req-r", "")
    again = step(resolved, ResolveReview("alice", "made by hand", "req-r"), 42_100)
    assert (again.refusal, again.session, again.to_save) == (None, resolved, False)
    assert step(resolved, MarkDone("refund", 1, 1, "a", "b", "req-d"), 42_200).refusal is None
    other = step(resolved, ResolveReview("alice", "made by hand", "req-s"), 42_100)
    assert other.refusal is not None and other.refusal.code == "invalid_state"
    # Without a key nothing is remembered: decided again, as before.
    plain = step(done, ResolveReview("alice", "made by hand"), 42_000).session
    assert plain.asked == done.asked
    assert Session.from_record(resolved.to_record()) == resolved
    assert "req-r" not in str(resolved.to_admin())
