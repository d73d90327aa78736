"""The machine's rules for providers that authorize first (Stripe's manual capture, the
sandbox's authorize-first mode) and ask the customer to act (3-D Secure), and for the
provider reference saved before a charge is confirmed. Holds are captured or released
through the outbox; the attempt succeeds when the capture is confirmed. Pure, like
tests/unit/test_machine.py, whose helpers (and their invariants) it uses."""

from __future__ import annotations

from dataclasses import replace

from paylive.core.machine import (
    Cancel,
    EffectOutcome,
    ProviderResult,
    Reference,
    StartAttempt,
    Tick,
)
from paylive.core.session import Session

from .test_machine import DEADLINE, PAY, causes, outbox, pay, settle, step

ACTION = {"type": "authenticate", "provider": "stripe", "client_secret": "pi_1_secret_x"}
HOLD = ProviderResult(1, "authorized", provider_ref="pi_1")


def captured(s: Session, now: int, attempt: int = 1) -> object:
    return step(s, EffectOutcome("capture", attempt, True, charged=True), now)


def test_the_reference_is_saved_quietly_before_the_charge_is_confirmed() -> None:
    s = pay()
    d = step(s, Reference(1, "pi_1"), PAY + 10)
    assert d.quiet and d.events == () and d.refusal is None and d.session.effects == ()
    assert d.session.attempts[0].provider_ref == "pi_1"
    # The same reference again changes nothing; another one is refused (never confirmed).
    again = step(d.session, Reference(1, "pi_1"), PAY + 11)
    assert not again.to_save and again.refusal is None
    other = step(d.session, Reference(1, "pi_2"), PAY + 12)
    assert other.refusal is not None and other.refusal.code == "invalid_state"
    assert other.session.attempts[0].provider_ref == "pi_1"


def test_no_reference_once_the_attempt_has_ended() -> None:
    s = settle(pay(), Cancel(), PAY + 10).session
    d = step(s, Reference(1, "pi_1"), PAY + 20)
    assert d.refusal is not None and d.refusal.code == "invalid_state"
    assert d.session.attempts[0].provider_ref is None
    missing = step(s, Reference(7, "pi_1"), PAY + 20)
    assert missing.refusal is not None and missing.refusal.code == "unknown_attempt"


def test_a_hold_in_flight_is_captured_and_the_attempt_succeeds_on_the_capture() -> None:
    s = step(pay(), Reference(1, "pi_1"), PAY + 5).session
    held = step(s, HOLD, PAY + 10)
    assert held.quiet and held.session.status == "processing"
    assert outbox(held.session) == [("capture", 1, "pending")]
    # The same hold announced again puts nothing more in the outbox.
    assert not step(held.session, HOLD, PAY + 11).to_save
    done = captured(held.session, PAY + 20)
    assert causes(done) == ["effect_done", "succeeded"]
    assert done.session.status == "succeeded" and done.session.attempts[0].provider_ref == "pi_1"
    assert outbox(done.session) == [("capture", 1, "done")]
    # Stripe's payment_intent.succeeded follows: the success was applied already.
    assert not step(done.session, ProviderResult(1, "succeeded"), PAY + 30).to_save


def test_the_success_event_may_come_before_the_capture_is_recorded() -> None:
    held = step(pay(), HOLD, PAY + 10).session
    paid = step(held, ProviderResult(1, "succeeded", provider_ref="pi_1"), PAY + 20)
    assert causes(paid) == ["succeeded"]
    # The capture's own answer (the same key again) closes the effect and nothing else.
    done = captured(paid.session, PAY + 30)
    assert causes(done) == ["effect_done"]
    assert outbox(done.session) == [("capture", 1, "done")]


def test_a_late_hold_is_captured_while_the_session_is_open() -> None:
    timed_out = step(pay(), Tick(), DEADLINE).session
    assert timed_out.status == "interrupted"
    held = step(timed_out, HOLD, DEADLINE + 5)
    assert outbox(held.session) == [("capture", 1, "pending")]
    late = captured(held.session, DEADLINE + 9)
    assert causes(late) == ["effect_done", "late_success"]


def test_a_capture_that_finds_the_hold_gone_ends_the_attempt() -> None:
    held = step(pay(), HOLD, PAY + 10).session
    gone = step(held, EffectOutcome("capture", 1, True, charged=False), PAY + 20)
    assert causes(gone) == ["effect_done", "provider_error", "retry_prompt"]
    assert gone.session.attempts[0].status == "provider_error"
    assert gone.session.status == "interrupted"


def test_a_capture_not_made_in_time_is_decided_by_the_void() -> None:
    held = step(pay(), HOLD, PAY + 10).session
    unknown = step(held, Tick(), DEADLINE).session
    assert unknown.status == "interrupted" and unknown.attempts[0].status == "timeout"
    # The retry's void released the hold: the capture is cancelled, never to be made,
    # and the release is confirmed once more through the outbox.
    retried = settle(unknown, StartAttempt(), unknown.retry_at)
    assert [a.status for a in retried.session.attempts] == ["voided", "processing"]
    assert outbox(retried.session) == [("capture", 1, "cancelled"), ("void", 1, "pending")]
    # Its answer, if a try was in flight, changes nothing more.
    late = step(retried.session, EffectOutcome("capture", 1, True), unknown.retry_at + 5)
    assert not late.to_save
    # Or the void found the money taken: the session is paid, the retry refused.
    paid = settle(unknown, StartAttempt(), unknown.retry_at, charged={1})
    assert paid.refusal is not None and paid.refusal.code == "already_paid"
    assert causes(paid) == ["late_success"]
    assert outbox(paid.session) == [("capture", 1, "pending")]


def test_a_hold_after_the_end_is_released_not_refunded() -> None:
    cancelled = settle(pay(), Cancel(), PAY + 10).session
    d = step(cancelled, HOLD, PAY + 20)
    assert d.quiet and outbox(d.session) == [("void", 1, "pending")]
    assert d.session.status == "cancelled" and not d.session.needs_review
    assert d.session.attempts[0].provider_ref == "pi_1", "the release needs the reference"
    released = step(d.session, EffectOutcome("void", 1, True), PAY + 30)
    assert causes(released) == ["effect_done"] and not released.session.needs_review
    # Announced again: the hold was released once, and is not asked for twice.
    assert not step(released.session, HOLD, PAY + 40).to_save


def test_a_release_that_finds_the_money_taken_is_refunded() -> None:
    cancelled = settle(pay(), Cancel(), PAY + 10).session
    d = step(cancelled, HOLD, PAY + 20).session
    taken = step(d, EffectOutcome("void", 1, True, charged=True), PAY + 30)
    assert causes(taken) == ["effect_done", "late_success_refunded"]
    assert outbox(taken.session) == [("void", 1, "done"), ("refund", 1, "pending")]
    assert taken.session.needs_review and taken.session.attempts[0].status == "refunded"


def test_a_hold_after_a_success_is_nothing_new() -> None:
    paid = step(pay(), ProviderResult(1, "succeeded", provider_ref="pi_1"), PAY + 10).session
    assert not step(paid, HOLD, PAY + 20).to_save


def test_a_capture_found_after_the_end_is_refunded() -> None:
    cancelled = settle(pay(), Cancel(), PAY + 10).session
    d = step(cancelled, ProviderResult(1, "succeeded", provider_ref="pi_1"), PAY + 20)
    assert outbox(d.session) == [("refund", 1, "pending")] and d.session.needs_review


def test_an_authentication_step_is_pushed_once_and_shown_while_processing() -> None:
    s = pay()
    asked = step(
        s, ProviderResult(1, "requires_action", provider_ref="pi_1", action=ACTION), PAY + 5
    )
    assert causes(asked) == ["requires_action"]
    public = asked.events[0].data["session"]["attempts"][0]
    assert public["action"] == ACTION and public["provider_ref"] == "pi_1"
    assert asked.session.status == "processing" and asked.session.deadline == s.deadline
    again = step(asked.session, ProviderResult(1, "requires_action", action=ACTION), PAY + 6)
    assert not again.to_save
    ended = step(asked.session, Tick(), DEADLINE).session
    assert "action" not in ended.to_public()["attempts"][0]


def test_a_success_without_a_reference_keeps_the_saved_one() -> None:
    s = step(pay(), Reference(1, "pi_1"), PAY + 5).session
    done = step(s, ProviderResult(1, "succeeded"), PAY + 20).session
    assert done.attempts[0].provider_ref == "pi_1"
    stored = Session.from_record(replace(done, version=3).to_record())
    assert stored.attempts[0].provider_ref == "pi_1"
