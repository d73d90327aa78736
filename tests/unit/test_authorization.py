"""The machine's rules for providers that authorize first (Stripe's manual capture) and
ask the customer to act (3-D Secure), and for the provider reference saved before a
charge is confirmed. Pure, like tests/unit/test_machine.py, whose helpers it uses."""

from __future__ import annotations

from dataclasses import replace

from paylive.core.machine import (
    Cancel,
    Capture,
    Decision,
    ProviderResult,
    Reference,
    Refund,
    Tick,
    Void,
    decide,
)
from paylive.core.session import Session

from .test_machine import DEADLINE, PAY, RULES, SID, pay, settle, step

KEY = f"{SID}:1"
ACTION = {"type": "authenticate", "provider": "stripe", "client_secret": "pi_1_secret_x"}


def quiet(s: Session, command: object, now: int = PAY + 10) -> Decision:
    """A decision that may save without a durable event (so test_machine's ``check``,
    which says "no event, no change", does not apply)."""
    out = decide(s, command, now, RULES)  # type: ignore[arg-type]
    assert isinstance(out, Decision), out
    assert out.events == () and out.session.seq == s.seq
    return out


def test_the_reference_is_saved_quietly_before_the_charge_is_confirmed() -> None:
    s = pay()
    d = quiet(s, Reference(1, "pi_1"))
    assert d.changed and d.quiet and d.refusal is None and d.effects == ()
    assert d.session.attempts[0].provider_ref == "pi_1"
    # The same reference again changes nothing; another one is refused (never confirmed).
    again = quiet(d.session, Reference(1, "pi_1"))
    assert not again.changed and again.refusal is None
    other = quiet(d.session, Reference(1, "pi_2"))
    assert other.refusal is not None and other.refusal.code == "invalid_state"
    assert other.session.attempts[0].provider_ref == "pi_1"


def test_no_reference_once_the_attempt_has_ended() -> None:
    s = settle(pay(), Cancel(), PAY + 10).session
    d = quiet(s, Reference(1, "pi_1"))
    assert d.refusal is not None and d.refusal.code == "invalid_state"
    assert d.session.attempts[0].provider_ref is None
    missing = quiet(s, Reference(7, "pi_1"))
    assert missing.refusal is not None and missing.refusal.status == 404


def test_an_authorization_in_flight_is_captured_and_succeeds_on_capture() -> None:
    s = quiet(pay(), Reference(1, "pi_1")).session
    d = quiet(s, ProviderResult(1, "authorized", provider_ref="pi_1"))
    assert d.effects == (Capture(1, KEY),) and d.session.status == "processing"
    done = step(d.session, ProviderResult(1, "succeeded", provider_ref="pi_1"), PAY + 20)
    assert done.session.status == "succeeded" and done.session.attempts[0].provider_ref == "pi_1"


def test_a_late_authorization_is_captured_while_the_session_is_open() -> None:
    timed_out = step(pay(), Tick(), DEADLINE).session
    assert timed_out.status == "interrupted"
    d = quiet(timed_out, ProviderResult(1, "authorized", provider_ref="pi_1"), DEADLINE + 5)
    assert d.effects == (Capture(1, KEY),)
    late = step(d.session, ProviderResult(1, "succeeded", provider_ref="pi_1"), DEADLINE + 9)
    assert late.events[0].data["cause"] == "late_success"


def test_an_authorization_after_the_end_is_released_not_refunded() -> None:
    cancelled = settle(pay(), Cancel(), PAY + 10).session
    d = quiet(cancelled, ProviderResult(1, "authorized", provider_ref="pi_1"), PAY + 20)
    assert d.effects == (Void(1, KEY),)
    assert d.session.status == "cancelled" and not d.session.needs_review
    assert d.session.attempts[0].provider_ref == "pi_1", "the release needs the reference"


def test_an_authorization_after_a_success_is_nothing_new() -> None:
    paid = step(pay(), ProviderResult(1, "succeeded", provider_ref="pi_1"), PAY + 10).session
    d = decide(paid, ProviderResult(1, "authorized", provider_ref="pi_1"), PAY + 20, RULES)
    assert isinstance(d, Decision) and not d.changed


def test_a_capture_found_after_the_end_is_refunded() -> None:
    cancelled = settle(pay(), Cancel(), PAY + 10).session
    d = step(cancelled, ProviderResult(1, "succeeded", provider_ref="pi_1"), PAY + 20)
    assert d.effects == (Refund(1, KEY),) and d.session.needs_review


def test_an_authentication_step_is_pushed_once_and_shown_while_processing() -> None:
    s = pay()
    asked = step(
        s, ProviderResult(1, "requires_action", provider_ref="pi_1", action=ACTION), PAY + 5
    )
    assert [e.data["cause"] for e in asked.events] == ["requires_action"]
    public = asked.events[0].data["session"]["attempts"][0]
    assert public["action"] == ACTION and public["provider_ref"] == "pi_1"
    assert asked.session.status == "processing" and asked.session.deadline == s.deadline
    again = decide(asked.session, ProviderResult(1, "requires_action", action=ACTION), PAY, RULES)
    assert isinstance(again, Decision) and not again.changed
    ended = step(asked.session, Tick(), DEADLINE).session
    assert "action" not in ended.to_public()["attempts"][0]


def test_a_success_without_a_reference_keeps_the_saved_one() -> None:
    s = quiet(pay(), Reference(1, "pi_1")).session
    done = step(s, ProviderResult(1, "succeeded"), PAY + 20).session
    assert done.attempts[0].provider_ref == "pi_1"
    stored = Session.from_record(replace(done, version=3).to_record())
    assert stored.attempts[0].provider_ref == "pi_1"
