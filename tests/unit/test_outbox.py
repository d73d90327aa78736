"""The outbox and review rules of the pure machine (core/outbox.py, core/effects.py):
which effects a decision writes, how each answer is recorded, when a session is
flagged, and when a review may be resolved. No I/O."""

from __future__ import annotations

import dataclasses

import pytest

from paylive.core.effects import GatewayEffect, backoff_ms
from paylive.core.machine import (
    Cancel,
    Decision,
    DeliveryOutcome,
    EffectOutcome,
    NeedsVoid,
    ProviderResult,
    ResolveReview,
    Rules,
    SeeOutcome,
    SendAgain,
    StartAttempt,
    Tick,
    decide,
    new_session,
)
from paylive.core.outbox import owe_archive
from paylive.core.session import Session

from ..support.core import CARD, decided

RULES = Rules(
    attempt_timeout_ms=1_000,
    max_attempts=3,
    retry_delay_ms=0,
    session_ttl_ms=60_000,
    effect_retry_base_ms=1_000,
    effect_retry_cap_ms=8_000,
    effect_review_after_ms=30_000,
)

SID = "ps_outbox"


def step(s: Session, command: object, now: int, **voids: bool) -> Decision:
    return decided(s, command, now, RULES, {int(k[1:]): v for k, v in voids.items()})


def causes(d: Decision) -> list[str]:
    return [e.data["cause"] for e in d.events]


def outbox(s: Session) -> list[tuple[str, int, str]]:
    return [(e.kind, e.attempt, e.status) for e in s.effects]


def late_success_after_cancel() -> Session:
    """Cancelled while attempt 1 was in flight (the void found nothing), then the
    provider charged attempt 1 after all: money to give back, decided at t=2000."""
    s = new_session(SID, "order-7", 500, "EUR", {}, 0, RULES)
    s = step(s, StartAttempt(CARD), 100).session
    assert decide(s, Cancel(), 200, RULES) == NeedsVoid((1,))
    s = step(s, Cancel(), 200, a1=False).session
    return step(s, ProviderResult(1, "succeeded"), 2_000).session


# Which effects a decision writes ---------------------------------------------------------


def test_a_late_success_writes_a_refund_due_at_once() -> None:
    s = late_success_after_cancel()
    assert s.status == "cancelled" and s.needs_review
    assert s.effects == (GatewayEffect("refund", 1, created_at=2_000, next_at=2_000),)
    assert s.next_effect_at() == 2_000
    assert s.effects[0].key(SID) == f"{SID}:1:refund"
    # No timer for the refund (the effect loop has its own): only the outcome
    # receipt's, from the cancel at 200 (core/receipt.py).
    assert s.next_due() == 200 + RULES.outcome_unseen_ms


def test_a_hold_for_an_attempt_the_provider_released_is_released_again_quietly() -> None:
    s = new_session(SID, "o", 500, "EUR", {}, 0, RULES)
    s = step(s, StartAttempt(CARD), 100).session
    s = step(s, Tick(), 1_100).session  # timeout: outcome unknown
    s = step(s, StartAttempt(), 1_200, a1=False).session  # the void released it
    assert [a.status for a in s.attempts] == ["voided", "processing"]
    d = step(s, ProviderResult(1, "authorized"), 1_300)
    assert d.events == () and d.quiet
    assert d.session.status == "processing" and not d.session.needs_review
    assert outbox(d.session) == [("void", 1, "pending")]
    again = step(d.session, ProviderResult(1, "authorized"), 1_400)
    assert again.session == d.session and not again.quiet


def test_the_same_success_twice_writes_one_effect() -> None:
    s = late_success_after_cancel()
    d = step(s, ProviderResult(1, "succeeded"), 2_500)
    assert d.session == s and d.events == ()


# Answers -------------------------------------------------------------------------------------


def test_a_confirmed_effect_is_done_with_a_durable_event() -> None:
    s = late_success_after_cancel()
    d = step(s, EffectOutcome("refund", 1, True), 2_050)
    assert causes(d) == ["effect_done"]
    event = d.events[0]
    assert event.data["previous"] == "cancelled" and event.seq == s.seq + 1
    assert event.data["effect"] == {
        "id": f"{SID}:1:refund",
        "session": SID,
        "attempt": 1,
        "kind": "refund",
        "status": "done",
        "tries": 1,
        "next_at": None,
        "last_error": None,
        "created_at": 2_000,
        "done_at": 2_050,
    }
    assert d.session.pending_effects == () and d.session.next_effect_at() is None
    # A second answer (a try repeated after this one was saved) changes nothing.
    again = step(d.session, EffectOutcome("refund", 1, True), 2_060)
    assert again.session == d.session and again.events == ()


def test_a_failed_try_is_written_on_the_effect_alone_with_capped_backoff() -> None:
    s = late_success_after_cancel()
    seen = []
    now = 2_000
    for _ in range(6):
        d = step(s, EffectOutcome("refund", 1, False, "provider unavailable", jitter=0.0), now)
        assert d.events == () and d.quiet
        assert d.session.seq == s.seq and d.session.status == s.status
        effect = d.session.effects[0]
        seen.append(effect.next_at - now)
        assert (effect.status, effect.last_error) == ("pending", "provider unavailable")
        s, now = d.session, effect.next_at
    # Half of 1, 2, 4, 8, 8, 8 s with no jitter: doubling, then capped.
    assert seen == [500, 1_000, 2_000, 4_000, 4_000, 4_000]
    assert s.effects[0].tries == 6


@pytest.mark.parametrize(
    ("tries", "jitter", "expected"),
    [(1, 0.0, 500), (1, 0.999, 999), (2, 0.5, 1_500), (4, 1.0, 8_000), (30, 0.0, 4_000)],
)
def test_backoff_is_half_fixed_half_jitter_and_capped(
    tries: int, jitter: float, expected: int
) -> None:
    assert backoff_ms(tries, jitter, 1_000, 8_000) == expected


def test_an_effect_failing_past_the_review_time_flags_the_session_and_goes_on() -> None:
    s = new_session(SID, "o", 500, "EUR", {}, 0, RULES)
    s = step(s, StartAttempt(CARD), 100).session
    s = step(s, ProviderResult(1, "authorized"), 300).session  # capture due at 300
    now = 300
    while True:
        d = step(s, EffectOutcome("capture", 1, False, "down", jitter=0.9), now)
        s = d.session
        if d.events:
            break
        assert not s.needs_review
        now = s.effects[0].next_at
    # The try just before the review time was moved to land on it exactly.
    assert now == 300 + RULES.effect_review_after_ms
    assert causes(d) == ["effect_overdue"] and s.needs_review
    assert d.events[0].data["effect"]["status"] == "pending"
    # Retries go on, quietly now (the flag is up), until the provider confirms.
    d = step(s, EffectOutcome("capture", 1, False, "down", jitter=0.9), s.effects[0].next_at)
    assert d.quiet and d.events == () and d.session.effects[0].pending
    d = step(
        d.session, EffectOutcome("capture", 1, True, charged=True), d.session.effects[0].next_at
    )
    assert causes(d) == ["effect_done", "succeeded"] and d.session.needs_review


def test_an_answer_for_an_effect_the_session_does_not_have_is_refused() -> None:
    s = late_success_after_cancel()
    d = step(s, EffectOutcome("capture", 1, True), 2_100)
    assert d.refusal is not None and d.refusal.code == "unknown_effect"
    assert d.session == s


# Reviews ---------------------------------------------------------------------------------


def test_a_review_cannot_be_resolved_while_effects_are_pending() -> None:
    s = late_success_after_cancel()
    d = step(s, ResolveReview("ana", "refunded by hand?"), 2_100)
    assert d.refusal is not None
    assert d.refusal.code == "effects_pending"
    assert "refund of attempt 1" in d.refusal.message
    assert d.session == s


def test_a_review_is_resolved_once_the_provider_confirmed() -> None:
    s = step(late_success_after_cancel(), EffectOutcome("refund", 1, True), 2_100).session
    d = step(s, ResolveReview("ana", "customer told"), 3_000)
    assert causes(d) == ["review_resolved"]
    assert d.session.needs_review is False
    assert d.session.review == {"by": "ana", "note": "customer told", "at": 3_000}
    assert d.session.to_admin()["review"] == d.session.review
    assert "review" not in d.session.to_public(), "a staff note is not for the checkout page"
    assert d.events[0].data["session"]["needs_review"] is False
    again = step(d.session, ResolveReview("bo", "twice"), 3_100)
    assert again.refusal is not None and again.refusal.code == "invalid_state"


def test_the_outbox_and_the_review_survive_the_record() -> None:
    s = step(late_success_after_cancel(), EffectOutcome("refund", 1, False, "x"), 2_100).session
    assert Session.from_record(s.to_record()) == s
    resolved = step(
        step(s, EffectOutcome("refund", 1, True), 9_000).session, ResolveReview("a", "b"), 9_100
    ).session
    assert Session.from_record(resolved.to_record()) == resolved


def overdue_expiry_of_a_hold() -> Session:
    """A hold (the provider authorizes first) whose capture failed while the provider
    was down; the attempt timed out, and the void its expiry needs was never confirmed:
    once past the review time the session expires all the same."""
    s = new_session(SID, "order-8", 500, "EUR", {}, 0, RULES)
    s = step(s, StartAttempt(CARD), 10).session
    s = step(s, ProviderResult(1, "authorized", provider_ref="pi_1"), 20).session
    assert ("capture", 1, "pending") in outbox(s)
    s = step(s, EffectOutcome("capture", 1, False, "down"), 30).session
    s = step(s, Tick(), 1_100).session
    assert s.status == "interrupted"
    assert decide(s, Tick(), 60_000, RULES) == NeedsVoid((1,))
    return step(s, Tick(), 60_000 + RULES.effect_review_after_ms).session


@pytest.mark.parametrize("taken", [False, True])
def test_an_overdue_expiry_releases_the_hold_and_never_captures_it(taken: bool) -> None:
    s = overdue_expiry_of_a_hold()
    assert s.status == "expired" and s.needs_review
    # The session is over: its hold is released, never captured (protocol 2.3). The
    # capture stayed pending here once, and the outbox, older first, would have taken
    # the money of an expired session and then refunded it.
    assert outbox(s) == [("capture", 1, "cancelled"), ("void", 1, "pending")]
    # The provider back, the release decides: nothing moved, or the money had been
    # taken after all (then refunded as any late success of a session over).
    after = step(s, EffectOutcome("void", 1, True, charged=taken), 100_000).session
    refunds = [e for e in after.effects if e.kind == "refund"]
    assert (after.attempts[0].status == "refunded") is taken
    assert [(e.attempt, e.status) for e in refunds] == ([(1, "pending")] if taken else [])


# What the archive is owed --------------------------------------------------------------


ARCHIVED = dataclasses.replace(RULES, archive=True)


def ended() -> Session:
    s = new_session(SID, "o", 500, "EUR", {}, 0, ARCHIVED)
    s = decided(s, StartAttempt(CARD), 100, ARCHIVED).session
    return decided(s, ProviderResult(1, "succeeded"), 200, ARCHIVED).session


def test_an_ended_session_that_changes_owes_the_archive_until_its_version_is_listed() -> None:
    s = ended()
    seen = decided(s, SeeOutcome("succeeded"), 300, ARCHIVED)
    owing = owe_archive(s, seen, ARCHIVED, 300).session
    assert owing.archive_at == 300 and owing.owes and owing.next_effect_at() == 300
    assert Session.from_record(owing.to_record()).archive_at == 300, "kept in the record"
    stored = dataclasses.replace(owing, version=7)
    # A snapshot of an older version settles nothing: the change since is not in it.
    assert not decide(stored, DeliveryOutcome(archived=6), 400, ARCHIVED).to_save
    settled = decide(stored, DeliveryOutcome(archived=7), 400, ARCHIVED)
    assert settled.to_save and not settled.events
    assert settled.session.archive_at is None and not settled.session.owes


def test_only_an_ended_session_with_the_archive_on_owes_it() -> None:
    s = ended()
    seen = decided(s, SeeOutcome("succeeded"), 300, ARCHIVED)
    assert owe_archive(s, seen, RULES, 300).session.archive_at is None, "no archive"
    fresh = new_session(SID, "o", 500, "EUR", {}, 0, ARCHIVED)
    started = decided(fresh, StartAttempt(CARD), 100, ARCHIVED)
    assert owe_archive(fresh, started, ARCHIVED, 100).session.archive_at is None, "not ended"
    nothing = Decision(s, quiet=True)
    assert owe_archive(s, nothing, ARCHIVED, 300).session.archive_at is None, "no change kept"
    audited = Decision(s.with_audit({"id": "aud_1", "at": 300}), quiet=True)
    assert owe_archive(s, audited, ARCHIVED, 300).session.archive_at == 300, "an audit entry"


def test_a_keyed_send_again_posted_since_is_answered_without_queueing_it_again() -> None:
    """Its kept answer lost, the same keyed "send again" finds that it queued the event:
    nothing is queued again (before: the shop got the event a second time). Another
    event sent again with the same key is another request."""
    s = new_session(SID, "o", 500, "EUR", {}, 0, RULES)
    event = {"id": f"evt_{SID}_1_cancelled", "type": "session.cancelled"}
    queued = step(s, SendAgain(event, 1, "req-a"), 100).session
    assert [d.id for d in queued.deliveries] == [event["id"]]
    assert queued.asked == ((f"send_again {event['id']}", "req-a", ""),)
    posted = step(queued, DeliveryOutcome(posted=event["id"], ok=True), 200).session
    assert posted.deliveries == ()
    again = step(posted, SendAgain(event, 2, "req-a"), 300)
    assert (again.refusal, again.session, again.to_save) == (None, posted, False)
    assert step(posted, SendAgain(event, 2, "req-b"), 300).session.deliveries != ()
    other = {"id": f"evt_{SID}_2_updated", "type": "session.updated"}
    assert step(posted, SendAgain(other, 1, "req-a"), 300).session.deliveries != ()
