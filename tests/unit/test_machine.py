"""The pure state machine against docs/protocol.md section 2.

No I/O: ``step`` asks ``decide`` once, ``settle`` plays the service's part (void what the
machine asks at a fake gateway, then decide again). Every decision goes through
``check``, so the invariants (seq, ``previous``, one success at most, keys) are tested
on every transition, not just in the tests that name them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace

import pytest

from paylive.core.machine import (
    Cancel,
    Charge,
    Decision,
    Interrupt,
    NeedsVoid,
    ProviderResult,
    Rules,
    SeeOutcome,
    StartAttempt,
    Tick,
    decide,
    new_session,
)
from paylive.core.session import (
    A_DECLINED,
    A_NETWORK_ERROR,
    A_PROCESSING,
    A_PROVIDER_ERROR,
    A_REFUNDED,
    A_SUCCEEDED,
    A_TIMEOUT,
    A_VOIDED,
    ASKED_KEPT,
    CANCELLED,
    CREATED,
    EXPIRED,
    FAILED,
    INTERRUPTED,
    OUTCOME_UNKNOWN,
    PROCESSING,
    SUCCEEDED,
    Session,
)

from ..support import core
from ..support.core import CARD, RULES, T0, decided

SID = "ps_test8Jk2"
PAY = T0 + 1_000
DEADLINE = PAY + RULES.attempt_timeout_ms
EXPIRES = T0 + RULES.session_ttl_ms
OTHER_CARD = {"card": "5555555555554444"}


# Helpers ----------------------------------------------------------------------


def fresh(rules: Rules = RULES, now: int = T0) -> Session:
    return core.fresh(
        rules, sid=SID, order_id="order-1001", amount=1999, metadata={"cart": "7"}, now=now
    )


def check(before: Session, d: Decision, now: int, rules: Rules = RULES) -> None:
    """Invariants every decision must keep, whatever the command."""
    s = d.session
    # seq: exactly one per durable event, contiguous, and a state event embeds its own seq.
    assert [e.seq for e in d.events] == list(range(before.seq + 1, before.seq + 1 + len(d.events)))
    assert s.seq == before.seq + len(d.events)
    previous = before.status
    for i, e in enumerate(d.events):
        assert e.durable and e.session == before.id and e.ts == now
        if e.type == "state":
            assert e.data["session"]["seq"] == e.seq
            # ``previous`` is the status just before this event, event by event.
            assert e.data["previous"] == previous
            previous = e.data["session"]["status"]
        else:
            assert e.type == "retry_prompt"
            before_prompt = d.events[i - 1]
            assert before_prompt.type == "state"
            assert before_prompt.data["session"]["status"] == INTERRUPTED
            assert e.data["retry_at"] == s.retry_at
    if d.events:
        assert previous == s.status
        assert s.updated_at == now
    elif d.quiet:
        # Saved without an event: only the outbox (a failed try, a capture or a release
        # put in) and the provider's reference of an attempt may change.
        assert replace(s, effects=before.effects, attempts=before.attempts) == before
        unnamed = [replace(a, provider_ref=None) for a in s.attempts]
        assert unnamed == [replace(a, provider_ref=None) for a in before.attempts]
        assert d.charges == ()
    else:
        # Nothing durable happened: nothing changed and no money moves.
        assert s == before
        assert d.charges == ()
    # Money moves at most once: one succeeded attempt exactly when the session succeeded.
    assert sum(a.status == A_SUCCEEDED for a in s.attempts) == (1 if s.status == SUCCEEDED else 0)
    assert [a.number for a in s.attempts] == list(range(1, len(s.attempts) + 1))
    assert s.attempt == len(s.attempts)
    in_flight = [a for a in s.attempts if a.status == A_PROCESSING]
    if s.status == PROCESSING:
        assert in_flight == [s.current]
        assert s.deadline == s.current.started_at + rules.attempt_timeout_ms
    else:
        assert in_flight == []
        assert s.deadline is None
    if s.status == INTERRUPTED:
        assert s.retry_at is not None
    if s.terminal:
        assert s.retry_at is None
        # Nothing is left whose outcome is unknown once the session is over, but an
        # attempt whose void the provider did not confirm in time: flagged for review,
        # its void in the outbox (docs/protocol.md 2.2).
        for a in s.attempts:
            if a.status in OUTCOME_UNKNOWN:
                assert s.needs_review and s.effect("void", a.number) is not None
    for charge in d.charges:
        assert charge.key == f"{s.id}:{charge.attempt}"
    # The outbox only grows: an effect, once decided, is never dropped or decided twice.
    assert [(e.kind, e.attempt) for e in s.effects[: len(before.effects)]] == [
        (e.kind, e.attempt) for e in before.effects
    ]
    assert len({(e.kind, e.attempt) for e in s.effects}) == len(s.effects)
    for effect in s.effects[len(before.effects) :]:
        assert (effect.created_at, effect.next_at, effect.status) == (now, now, "pending")
        attempt = s.attempt_by_number(effect.attempt)
        if effect.kind == "refund":
            # Money given back: the attempt says so and staff are told.
            assert attempt.status == A_REFUNDED and s.needs_review
        elif effect.kind == "capture":
            # A hold taken while the session may still succeed by it, quietly.
            assert d.quiet and not s.terminal
            assert attempt.status in OUTCOME_UNKNOWN | {A_PROCESSING}
        else:
            # A hold released: the session is over or the attempt was voided.
            assert s.terminal or attempt.status not in OUTCOME_UNKNOWN
            assert attempt.status not in (A_SUCCEEDED, A_REFUNDED, A_PROCESSING)
    for effect in s.effects:
        if effect.status == "cancelled":
            # A capture is cancelled only because a void released its attempt's hold.
            assert effect.kind == "capture"
            assert s.attempt_by_number(effect.attempt).status == A_VOIDED


def step(
    s: Session,
    command: object,
    now: int,
    voids: Mapping[int, bool] | None = None,
    rules: Rules = RULES,
) -> Decision:
    out = decided(s, command, now, rules, voids)
    check(s, out, now, rules)
    return out


def needs_void(s: Session, command: object, now: int, rules: Rules = RULES) -> tuple[int, ...]:
    out = decide(s, command, now, rules)
    assert isinstance(out, NeedsVoid), f"expected NeedsVoid, got {out!r}"
    return out.attempts


def settle(
    s: Session, command: object, now: int, charged: Collection[int] = (), rules: Rules = RULES
) -> Decision:
    """The service's loop: void what the machine asks (``charged`` says which the gateway
    finds charged), then decide again with the answers."""
    voids: dict[int, bool] = {}
    for _ in range(4):
        out = decide(s, command, now, rules, voids)
        if isinstance(out, Decision):
            check(s, out, now, rules)
            return out
        # It must never ask for a void it already has an answer for (that would loop).
        assert out.attempts and not set(out.attempts) & set(voids)
        voids.update({n: n in charged for n in out.attempts})
    raise AssertionError("decide kept asking for voids")


def outbox(s: Session) -> list[tuple[str, int, str]]:
    return [(e.kind, e.attempt, e.status) for e in s.effects]


def causes(d: Decision) -> list[str]:
    return [e.data["cause"] if e.type == "state" else e.type for e in d.events]


def pay(s: Session | None = None, now: int = PAY, method: dict | None = CARD) -> Session:
    return step(s or fresh(), StartAttempt(method), now).session


# How an attempt in flight can end without success: (command maker, attempt status, reason).
def end_command(s: Session, how: str) -> tuple[object, int]:
    """The command that ends the processing attempt ``how``, and when it arrives."""
    at = s.current.started_at + 500
    if how == "timeout":
        return Tick(), s.deadline
    if how == "network_error":
        return ProviderResult(s.attempt, "network_error"), at
    if how == "interrupt":
        return Interrupt("network_error"), at
    if how == "provider_error":
        return ProviderResult(s.attempt, "provider_error"), at
    return ProviderResult(s.attempt, "declined", decline_code=how), at


def end(s: Session, how: str) -> Session:
    """End the processing attempt ``how`` while attempts remain (no void needed)."""
    command, at = end_command(s, how)
    return step(s, command, at).session


def retry(s: Session, charged: Collection[int] = (), method: dict | None = None) -> Decision:
    return settle(s, StartAttempt(method), s.retry_at, charged)


def succeeded_session() -> Session:
    return step(pay(), ProviderResult(1, "succeeded"), PAY + 1_500).session


def failed_session() -> Session:
    return end(pay(), "stolen_card")


def cancelled_session() -> Session:
    """Cancelled while attempt 1 was in flight: attempt 1 voided, nothing charged."""
    return settle(pay(), Cancel(), PAY + 100).session


def expired_session() -> Session:
    """Expired while interrupted after a timeout: attempt 1 voided, nothing charged."""
    s = end(pay(), "timeout")
    return settle(s, Tick(), s.expires_at).session


TERMINAL_MAKERS = {
    SUCCEEDED: succeeded_session,
    FAILED: failed_session,
    CANCELLED: cancelled_session,
    EXPIRED: expired_session,
}


# Creation and the happy path ----------------------------------------------------------


def test_new_session_starts_created() -> None:
    s = fresh()
    assert (s.status, s.attempt, s.attempts, s.seq) == (CREATED, 0, (), 0)
    assert s.expires_at == T0 + 900_000
    assert s.created_at == s.updated_at == T0
    assert s.max_attempts == 3
    assert (s.deadline, s.retry_at, s.last_error, s.needs_review) == (None, None, None, False)


def test_pay_starts_attempt_one_and_charges_under_its_key() -> None:
    d = step(fresh(), StartAttempt(CARD), PAY)
    s = d.session
    assert causes(d) == ["attempt_started"]
    assert d.events[0].data["previous"] == CREATED
    assert (s.status, s.attempt, s.deadline, s.retry_at) == (PROCESSING, 1, PAY + 30_000, None)
    assert s.attempts[0].status == A_PROCESSING
    assert (s.attempts[0].started_at, s.attempts[0].ended_at) == (PAY, None)
    assert s.payment_method == CARD
    assert d.charges == (Charge(1, f"{SID}:1", CARD, 1999, "EUR"),)
    assert d.refusal is None


def test_provider_success_succeeds() -> None:
    s = pay()
    d = step(s, ProviderResult(1, "succeeded", provider_ref="ch_1"), PAY + 1_500)
    s = d.session
    assert causes(d) == ["succeeded"]
    assert d.events[0].data["previous"] == PROCESSING
    assert s.status == SUCCEEDED
    assert (s.deadline, s.retry_at) == (None, None)
    a = s.attempts[0]
    assert (a.status, a.ended_at, a.provider_ref) == (A_SUCCEEDED, PAY + 1_500, "ch_1")
    assert d.charges == ()


def test_first_attempt_needs_a_payment_method() -> None:
    d = step(fresh(), StartAttempt(None), PAY)
    assert d.refusal is not None
    assert d.refusal.code == "invalid_field"


# Sandbox cards as provider results -------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "attempt_status", "reason", "decline_code"),
    [
        ("card_declined", A_DECLINED, "declined", "card_declined"),  # 4000000000000002
        ("insufficient_funds", A_DECLINED, "declined", "insufficient_funds"),  # ...9995
        ("provider_error", A_PROVIDER_ERROR, "provider_error", None),  # ...0119
    ],
)
def test_known_failures_interrupt_with_a_retry_prompt(
    how: str, attempt_status: str, reason: str, decline_code: str | None
) -> None:
    s = pay()
    command, at = end_command(s, how)
    d = step(s, command, at)
    s = d.session
    assert causes(d) == [reason, "retry_prompt"]
    assert d.events[0].data["previous"] == PROCESSING
    assert d.events[1].data == {
        "attempt": 1,
        "next_attempt": 2,
        "max_attempts": 3,
        "reason": reason,
        "retry_at": at + 2_000,
        "outcome_unknown": False,
    }
    assert (s.status, s.retry_at, s.deadline) == (INTERRUPTED, at + 2_000, None)
    a = s.attempts[0]
    assert (a.status, a.ended_at, a.decline_code) == (attempt_status, at, decline_code)
    assert s.last_error["reason"] == reason and s.last_error["attempt"] == 1
    assert s.last_error.get("decline_code") == decline_code
    assert d.charges == ()


@pytest.mark.parametrize(
    ("how", "attempt_status", "reason"),
    [
        ("timeout", A_TIMEOUT, "timeout"),  # 4000000000000408: Tick after the deadline
        ("network_error", A_NETWORK_ERROR, "network_error"),  # ...0507/0523: gateway unreachable
        ("interrupt", A_NETWORK_ERROR, "network_error"),  # the client lost the attempt
    ],
)
def test_unknown_outcomes_interrupt_with_outcome_unknown(
    how: str, attempt_status: str, reason: str
) -> None:
    s = pay()
    command, at = end_command(s, how)
    d = step(s, command, at)
    s = d.session
    assert causes(d) == [reason, "retry_prompt"]
    prompt = d.events[1].data
    assert prompt["reason"] == reason
    assert prompt["outcome_unknown"] is True
    assert prompt["retry_at"] == at + 2_000
    assert s.status == INTERRUPTED
    assert (s.attempts[0].status, s.attempts[0].ended_at) == (attempt_status, at)
    assert s.last_error["reason"] == reason


def test_timeout_message_names_the_configured_timeout() -> None:
    s = end(pay(), "timeout")
    assert s.last_error == {
        "reason": "timeout",
        "attempt": 1,
        "message": "no result from the provider in 30 s",
    }


def test_tick_one_ms_before_the_deadline_is_not_a_timeout() -> None:
    s = pay()
    assert step(s, Tick(), DEADLINE - 1).events == ()
    assert step(s, Tick(), DEADLINE).session.status == INTERRUPTED


@pytest.mark.parametrize("code", ["stolen_card", "lost_card", "fraudulent"])
def test_unrecoverable_decline_fails_the_session_at_once(code: str) -> None:
    s = pay()
    d = step(s, ProviderResult(1, "declined", decline_code=code), PAY + 1_500)
    s = d.session
    assert causes(d) == ["failed"]  # no retry_prompt: nothing to retry
    assert s.status == FAILED
    assert (s.attempts[0].status, s.attempts[0].decline_code) == (A_DECLINED, code)
    assert s.last_error["decline_code"] == code
    # Attempts remain, but the session is over: invalid_state, not max_attempts_reached.
    refusal = step(s, StartAttempt(OTHER_CARD), PAY + 10_000).refusal
    assert refusal.code == "invalid_state"


@pytest.mark.parametrize("how", ["timeout", "network_error", "interrupt"])
def test_retry_voids_the_unknown_attempt_first(how: str) -> None:
    # 4000000000000408 / 0507: the void finds nothing charged.
    s = end(pay(), how)
    assert needs_void(s, StartAttempt(None), s.retry_at) == (1,)
    ended = s.attempts[0].ended_at
    d = step(s, StartAttempt(None), s.retry_at, voids={1: False})
    s2 = d.session
    assert causes(d) == ["voided", "attempt_started"]
    assert d.events[0].data["previous"] == INTERRUPTED
    assert d.events[0].data["session"]["attempts"][0]["status"] == A_VOIDED
    assert (s2.attempts[0].status, s2.attempts[0].ended_at) == (A_VOIDED, ended)
    assert (s2.status, s2.attempt, s2.attempts[1].status) == (PROCESSING, 2, A_PROCESSING)
    assert d.charges == (Charge(2, f"{SID}:2", CARD, 1999, "EUR"),)
    assert d.refusal is None


@pytest.mark.parametrize("how", ["timeout", "network_error", "interrupt"])
def test_void_finding_a_charge_makes_the_retry_already_paid(how: str) -> None:
    # 4000000000000523 (and 0770 voided before its webhook): charged, answer lost.
    s = end(pay(), how)
    d = step(s, StartAttempt(None), s.retry_at, voids={1: True})
    s2 = d.session
    assert causes(d) == ["late_success"]
    assert d.events[0].data["previous"] == INTERRUPTED
    assert s2.status == SUCCEEDED
    assert len(s2.attempts) == 1 and s2.attempts[0].status == A_SUCCEEDED
    assert s2.attempts[0].ended_at == s.attempts[0].ended_at
    assert d.charges == ()  # no second charge
    assert d.refusal.code == "already_paid"


def test_late_success_webhook_after_the_deadline() -> None:
    # 4000000000000770: charged, but the webhook comes 1 s after the deadline.
    s = end(pay(), "timeout")
    d = step(s, ProviderResult(1, "succeeded", provider_ref="ch_late"), DEADLINE + 1_000)
    s2 = d.session
    assert causes(d) == ["late_success"]
    assert d.events[0].data["previous"] == INTERRUPTED
    assert (s2.status, s2.retry_at, s2.deadline) == (SUCCEEDED, None, None)
    a = s2.attempts[0]
    # The attempt keeps the time it ended at the deadline; it just turned out charged.
    assert (a.status, a.ended_at, a.provider_ref) == (A_SUCCEEDED, DEADLINE, "ch_late")
    assert d.charges == ()


@pytest.mark.parametrize("how", ["card_declined", "provider_error"])
def test_late_success_for_a_known_failure_still_succeeds(how: str) -> None:
    # "A provider success for any attempt while the session is not terminal".
    s = end(pay(), how)
    d = step(s, ProviderResult(1, "succeeded"), PAY + 5_000)
    assert causes(d) == ["late_success"]
    assert d.session.status == SUCCEEDED


# One attempt at a time, retry timing, payment method --------------------------------------


def test_pay_while_processing_is_refused() -> None:
    s = pay()
    d = step(s, StartAttempt(OTHER_CARD), PAY + 100)
    assert d.refusal.code == "invalid_state"
    assert d.charges == ()


def test_the_request_that_started_an_attempt_is_answered_with_it_again() -> None:
    """Its kept answer lost (docs/protocol.md 3.1), the same request again finds the
    attempt it started, however the session went on: never refused, never a second
    attempt or charge. Another request is decided as ever."""
    s = step(fresh(), StartAttempt(CARD, request="req-a"), PAY).session
    assert s.current.request == "req-a"
    again = step(s, StartAttempt(CARD, request="req-a"), PAY + 100)
    assert again.refusal is None and again.session == s and not again.to_save
    assert step(s, StartAttempt(CARD, request="req-b"), PAY + 100).refusal.code == "invalid_state"
    for later in (end(s, "timeout"), end(s, "stolen_card"), succeeded_session()):
        if later.current.request is None:
            later = later.with_attempt(replace(later.current, request="req-a"))
        d = step(later, StartAttempt(None, request="req-a"), later.updated_at + 1)
        assert (d.refusal, d.session, d.charges) == (None, later, ())


def test_an_attempt_keeps_its_request_in_the_record_only() -> None:
    s = step(fresh(), StartAttempt(CARD, request="req-a"), PAY).session
    assert "req-a" not in str(s.to_public()) and "req-a" not in str(s.to_admin())
    assert s.to_record()["attempts"][0]["request"] == "req-a"
    assert Session.from_record(s.to_record()) == s
    # An attempt started without a key adds nothing to the record.
    assert "request" not in pay().to_record()["attempts"][0]


def test_a_keyed_command_that_changed_the_session_is_answered_with_it_again() -> None:
    """Its kept answer lost (docs/protocol.md 3.1), the same keyed cancel, interrupt,
    seen or complete again finds what it did: answered with the session as it stands,
    nothing decided or saved. Another request, or the same digest on another command,
    is decided as ever."""
    cancelled = step(fresh(), Cancel("req-c"), PAY).session
    assert cancelled.asked == (("cancel", "req-c", ""),)
    again = step(cancelled, Cancel("req-c"), PAY + 100)
    assert (again.refusal, again.session, again.to_save) == (None, cancelled, False)
    for other in (Cancel("req-d"), Cancel()):
        assert step(cancelled, other, PAY + 100).refusal.code == "invalid_state"
    # The seen that follows is remembered beside it; the cancel is still found.
    seen = step(cancelled, SeeOutcome(CANCELLED, "req-c"), PAY + 200).session
    assert seen.asked == (("cancel", "req-c", ""), ("seen", "req-c", ""))
    assert step(seen, Cancel("req-c"), PAY + 300).refusal is None

    interrupted = step(pay(), Interrupt("network_error", "req-i"), PAY + 100).session
    assert interrupted.status == INTERRUPTED
    again = step(interrupted, Interrupt("network_error", "req-i"), PAY + 200)
    assert (again.refusal, again.session, again.to_save) == (None, interrupted, False)
    assert step(interrupted, Interrupt("network_error", "req-j"), PAY + 200).refusal.code == (
        "invalid_state"
    )
    # The retry it allows, started since, changes nothing of the answer but the session.
    retried = settle(interrupted, StartAttempt(None), interrupted.retry_at).session
    assert retried.status == PROCESSING
    again = step(retried, Interrupt("network_error", "req-i"), interrupted.retry_at + 1)
    assert (again.refusal, again.session, again.charges) == (None, retried, ())

    completed = step(pay(), ProviderResult(1, "succeeded", request="req-p"), PAY + 100).session
    again = step(completed, ProviderResult(1, "succeeded", request="req-p"), PAY + 200)
    assert (again.refusal, again.session, again.to_save) == (None, completed, False)
    # A provider's word carries no request: nothing is remembered for it.
    assert step(pay(), ProviderResult(1, "succeeded"), PAY + 100).session.asked == ()


def test_a_keyed_cancel_refused_after_its_change_is_refused_alike_again() -> None:
    """A cancel whose void found the money taken saved the success and was answered
    ``already_paid``: the same request again gets that answer, not "already succeeded"."""
    d = step(pay(), Cancel("req-c"), PAY + 100, voids={1: True})
    assert d.refusal.code == "already_paid"
    assert d.session.asked == (("cancel", "req-c", "already_paid"),)
    again = step(d.session, Cancel("req-c"), PAY + 200)
    assert again.refusal.code == "already_paid" and not again.to_save
    assert step(d.session, Cancel("req-d"), PAY + 200).refusal.code == "invalid_state"


def test_a_refused_or_unchanging_keyed_command_is_not_remembered() -> None:
    """Only a change is remembered: a refusal that saved nothing is what the same
    request will get again anyway, and a seen told twice changes nothing."""
    s = fresh()
    assert step(s, Interrupt("network_error", "req-i"), PAY).session.asked == ()
    seen = step(cancelled_session(), SeeOutcome(CANCELLED), PAY + 500).session
    assert step(seen, SeeOutcome(CANCELLED, "req-s"), PAY + 600).session.asked == ()


def test_a_session_remembers_its_newest_keyed_commands_only() -> None:
    s = fresh()
    for n in range(ASKED_KEPT + 4):
        s = s.with_asked("seen", f"req-{n}")
    assert len(s.asked) == ASKED_KEPT
    assert s.answered("seen", "req-3") is None
    assert s.answered("seen", f"req-{ASKED_KEPT + 3}") is not None


def test_the_keyed_commands_are_in_the_record_only() -> None:
    """Not on the wire; a record written before (or by a worker that drops them) loads
    with none; a session no keyed command changed adds nothing to its record."""
    s = step(fresh(), Cancel("req-c"), PAY).session
    assert "req-c" not in str(s.to_public()) and "req-c" not in str(s.to_admin())
    assert s.to_record()["asked"] == [["cancel", "req-c", ""]]
    assert Session.from_record(s.to_record()) == s
    record = s.to_record()
    del record["asked"]
    assert Session.from_record(record).asked == ()
    assert "asked" not in step(fresh(), Cancel(), PAY).session.to_record()


def test_retry_before_retry_at_is_refused_then_allowed() -> None:
    s = end(pay(), "card_declined")
    early = step(s, StartAttempt(None), s.retry_at - 1)
    assert early.refusal.code == "retry_not_yet_allowed"
    on_time = step(s, StartAttempt(None), s.retry_at)
    assert on_time.refusal is None
    assert on_time.session.status == PROCESSING
    assert on_time.session.deadline == s.retry_at + 30_000


def test_retry_reuses_the_last_payment_method() -> None:
    s = end(pay(method=CARD), "card_declined")
    d = retry(s)
    assert d.charges[0].payment_method == CARD
    assert d.session.payment_method == CARD


def test_retry_with_a_new_method_uses_and_keeps_it() -> None:
    s = end(pay(method=CARD), "card_declined")
    d = retry(s, method=OTHER_CARD)
    assert d.charges[0].payment_method == OTHER_CARD
    s = end(d.session, "provider_error")
    assert retry(s).charges[0].payment_method == OTHER_CARD


def test_second_interruption_prompts_for_the_third_attempt() -> None:
    s = end(pay(), "card_declined")
    s = retry(s).session
    command, at = end_command(s, "timeout")
    d = step(s, command, at)
    prompt = d.events[-1].data
    assert (prompt["attempt"], prompt["next_attempt"], prompt["max_attempts"]) == (2, 3, 3)
    assert prompt["outcome_unknown"] is True


@pytest.mark.parametrize("maker", [fresh, lambda: end(pay(), "card_declined")])
def test_interrupt_outside_processing_is_refused(maker) -> None:  # type: ignore[no-untyped-def]
    s = maker()
    d = step(s, Interrupt(), PAY + 5_000)
    assert d.refusal.code == "invalid_state"


def test_idempotency_keys_are_session_and_attempt_number() -> None:
    keys = []
    s = pay()
    keys.append(f"{SID}:1")
    for n in (2, 3):
        s = end(s, "card_declined")
        d = retry(s)
        assert [e.key for e in d.charges] == [f"{SID}:{n}"]
        keys.append(d.charges[0].key)
        s = d.session
    assert len(set(keys)) == 3
    assert [a["idempotency_key"] for a in s.to_public()["attempts"]] == keys


# Max attempts ----------------------------------------------------------------------------


def three_attempts(hows: tuple[str, str]) -> Session:
    """A session with attempt 3 in flight, after attempts ending ``hows`` (voids clean)."""
    s = pay()
    for how in hows:
        s = retry(end(s, how)).session
    assert s.attempt == 3
    return s


def test_three_timeouts_fail_the_session_after_voiding_the_last() -> None:
    s = three_attempts(("timeout", "timeout"))
    assert [a.status for a in s.attempts] == [A_VOIDED, A_VOIDED, A_PROCESSING]
    # The third timeout ends the session without success: void attempt 3 first.
    assert needs_void(s, Tick(), s.deadline) == (3,)
    d = step(s, Tick(), s.deadline, voids={3: False})
    s2 = d.session
    assert causes(d) == ["failed"]
    assert d.events[0].data["previous"] == PROCESSING
    assert s2.status == FAILED
    assert (s2.attempts[2].status, s2.attempts[2].ended_at) == (A_VOIDED, s.deadline)
    assert s2.last_error["reason"] == "timeout" and s2.last_error["attempt"] == 3
    refusal = step(s2, StartAttempt(None), s.deadline + 5_000).refusal
    assert refusal.code == "max_attempts_reached"


def test_last_timeout_whose_void_finds_a_charge_succeeds() -> None:
    s = three_attempts(("timeout", "timeout"))
    d = step(s, Tick(), s.deadline, voids={3: True})
    assert causes(d) == ["late_success"]
    assert d.session.status == SUCCEEDED
    assert d.session.attempts[2].status == A_SUCCEEDED
    assert d.refusal is None  # nobody asked: the timer did


@pytest.mark.parametrize("how", ["network_error", "interrupt"])
def test_last_network_error_also_voids_before_failing(how: str) -> None:
    s = three_attempts(("card_declined", "provider_error"))
    command, at = end_command(s, how)
    assert needs_void(s, command, at) == (3,)
    d = step(s, command, at, voids={3: False})
    assert causes(d) == ["failed"]
    assert d.session.attempts[2].status == A_VOIDED


def test_an_interrupt_of_the_last_attempt_whose_void_finds_a_charge_is_answered_paid() -> None:
    """Protocol 2.1: the interrupt asked to stop waiting; its answer is the success (no
    refusal, cause late_success), where a cancel gets already_paid."""
    s = three_attempts(("card_declined", "provider_error"))
    command, at = end_command(s, "interrupt")
    d = step(s, command, at, voids={3: True})
    assert (causes(d), d.refusal) == (["late_success"], None)
    assert d.session.status == SUCCEEDED and d.session.attempts[2].status == A_SUCCEEDED
    cancel = step(s, Cancel(), at, voids={3: True})
    assert cancel.refusal is not None and cancel.refusal.code == "already_paid"


def test_an_interrupt_with_a_retry_left_voids_nothing() -> None:
    d = step(pay(), Interrupt("network_error"), PAY + 5_000)  # no voids given: none needed
    assert d.session.status == INTERRUPTED and d.refusal is None
    assert d.session.attempts[0].status == A_NETWORK_ERROR  # its void waits for the retry


@pytest.mark.parametrize(
    ("how", "attempt_status"),
    [
        ("card_declined", A_DECLINED),
        ("insufficient_funds", A_DECLINED),
        ("provider_error", A_PROVIDER_ERROR),
    ],
)
def test_last_known_failure_fails_without_a_void(how: str, attempt_status: str) -> None:
    s = three_attempts(("card_declined", "timeout"))
    command, at = end_command(s, how)
    d = step(s, command, at)  # no voids given: none may be needed
    assert causes(d) == ["failed"]
    assert d.session.attempts[2].status == attempt_status
    refusal = step(d.session, StartAttempt(None), at + 10_000).refusal
    assert refusal.code == "max_attempts_reached"


def test_max_attempts_comes_from_the_rules() -> None:
    rules = replace(RULES, max_attempts=1)
    s = step(fresh(rules), StartAttempt(CARD), PAY, rules=rules).session
    assert s.max_attempts == 1
    d = step(s, ProviderResult(1, "declined", decline_code="card_declined"), PAY + 10, rules=rules)
    assert d.session.status == FAILED


# Cancel ----------------------------------------------------------------------------------


def test_cancel_created_needs_no_void() -> None:
    d = step(fresh(), Cancel(), PAY)
    assert causes(d) == ["cancelled"]
    assert d.events[0].data["previous"] == CREATED
    assert d.session.status == CANCELLED


def test_cancel_processing_voids_the_attempt_in_flight_first() -> None:
    s = pay()
    assert needs_void(s, Cancel(), PAY + 100) == (1,)
    d = step(s, Cancel(), PAY + 100, voids={1: False})
    assert causes(d) == ["cancelled"]
    assert d.events[0].data["previous"] == PROCESSING
    s2 = d.session
    assert (s2.status, s2.deadline) == (CANCELLED, None)
    assert (s2.attempts[0].status, s2.attempts[0].ended_at) == (A_VOIDED, PAY + 100)
    assert d.refusal is None


def test_cancel_processing_that_was_charged_is_already_paid() -> None:
    d = step(pay(), Cancel(), PAY + 100, voids={1: True})
    assert causes(d) == ["late_success"]
    assert d.session.status == SUCCEEDED
    assert d.refusal.code == "already_paid"


@pytest.mark.parametrize(("charged", "status"), [((), CANCELLED), ((1,), SUCCEEDED)])
def test_cancel_interrupted_after_timeout_voids_it(charged: tuple[int, ...], status: str) -> None:
    s = end(pay(), "timeout")
    assert needs_void(s, Cancel(), DEADLINE + 10) == (1,)
    d = settle(s, Cancel(), DEADLINE + 10, charged)
    assert d.session.status == status
    assert d.session.attempts[0].status == (A_SUCCEEDED if charged else A_VOIDED)
    assert (d.refusal.code if d.refusal else None) == ("already_paid" if charged else None)


def test_cancel_interrupted_after_decline_needs_no_void() -> None:
    s = end(pay(), "card_declined")
    d = step(s, Cancel(), PAY + 1_000)
    assert causes(d) == ["cancelled"]
    assert d.session.attempts[0].status == A_DECLINED


@pytest.mark.parametrize("status", list(TERMINAL_MAKERS))
def test_cancel_terminal_is_invalid_state(status: str) -> None:
    s = TERMINAL_MAKERS[status]()
    assert s.status == status
    d = step(s, Cancel(), EXPIRES + 10_000)
    assert d.refusal.code == "invalid_state"


@pytest.mark.parametrize("status", [SUCCEEDED, CANCELLED, EXPIRED])
def test_start_attempt_on_terminal_is_invalid_state(status: str) -> None:
    d = step(TERMINAL_MAKERS[status](), StartAttempt(CARD), EXPIRES + 10_000)
    assert d.refusal.code == "invalid_state"


# Expiry ----------------------------------------------------------------------------------


def test_created_session_expires_at_expires_at() -> None:
    s = fresh()
    assert step(s, Tick(), EXPIRES - 1).events == ()
    d = step(s, Tick(), EXPIRES)
    assert causes(d) == ["expired"]
    assert d.events[0].data["previous"] == CREATED
    assert d.session.status == EXPIRED


@pytest.mark.parametrize(("charged", "status"), [((), EXPIRED), ((1,), SUCCEEDED)])
def test_interrupted_session_expiring_voids_the_unknown_attempt(
    charged: tuple[int, ...], status: str
) -> None:
    s = end(pay(), "timeout")
    assert needs_void(s, Tick(), EXPIRES) == (1,)
    d = settle(s, Tick(), EXPIRES, charged)
    assert causes(d) == ["late_success" if charged else "expired"]
    assert d.events[0].data["previous"] == INTERRUPTED
    assert d.session.status == status


def test_interrupted_after_decline_expires_without_a_void() -> None:
    s = end(pay(), "card_declined")
    d = step(s, Tick(), EXPIRES)
    assert causes(d) == ["expired"]
    assert d.session.attempts[0].status == A_DECLINED


def late_payment() -> Session:
    """Attempt 1 started 10 s before expiry: it is still in flight at ``expires_at``."""
    return pay(now=EXPIRES - 10_000)


def test_attempt_in_flight_outlives_expiry() -> None:
    s = late_payment()
    assert step(s, Tick(), EXPIRES + 1).events == ()
    d = step(s, ProviderResult(1, "succeeded"), EXPIRES + 5_000)
    assert causes(d) == ["succeeded"]
    assert d.session.status == SUCCEEDED


@pytest.mark.parametrize("how", ["card_declined", "provider_error"])
def test_attempt_failing_after_expiry_expires_the_session(how: str) -> None:
    s = late_payment()
    d = step(s, end_command(s, how)[0], EXPIRES + 5_000)
    assert causes(d) == ["expired"]  # not interrupted: no retry_prompt
    assert d.session.status == EXPIRED
    assert d.session.last_error["reason"] == ("declined" if how == "card_declined" else how)


@pytest.mark.parametrize("how", ["timeout", "network_error", "interrupt"])
def test_unknown_outcome_after_expiry_voids_then_expires(how: str) -> None:
    s = late_payment()
    command, _ = end_command(s, how)
    at = s.deadline  # after expires_at
    assert at > s.expires_at
    assert needs_void(s, command, at) == (1,)
    d = step(s, command, at, voids={1: False})
    assert causes(d) == ["expired"]
    assert d.session.attempts[0].status == A_VOIDED
    d = step(s, command, at, voids={1: True})
    assert causes(d) == ["late_success"]


@pytest.mark.parametrize("last", [False, True])
def test_an_ending_timeout_whose_void_stays_unconfirmed_ends_flagged(last: bool) -> None:
    """docs/protocol.md 2.2: an attempt in doubt whose void the provider does not
    confirm for ``effect_review_after_ms`` ends its session all the same, flagged, with
    the void in the outbox. Only the expiry of a created or interrupted session did:
    the timeout of an attempt in flight at the expiry, or of the last attempt, asked
    for the void at every tick for good (the session processing, nobody told) until
    its record's expiry dropped it with the money in doubt."""
    rules = replace(RULES, max_attempts=1) if last else RULES
    s = pay(fresh(rules), now=EXPIRES - 10_000)
    at = s.deadline
    assert needs_void(s, Tick(), at, rules) == (1,)
    assert needs_void(s, Tick(), at + rules.effect_review_after_ms - 1, rules) == (1,)
    d = step(s, Tick(), at + rules.effect_review_after_ms, rules=rules)
    assert causes(d) == ["failed" if last else "expired"]
    assert d.session.status == (FAILED if last else EXPIRED)
    assert d.session.needs_review and d.session.deadline is None
    assert d.session.attempts[0].status == A_TIMEOUT, "still in doubt: not voided"
    assert [(e.kind, e.attempt) for e in d.session.pending_effects] == [("void", 1)]


@pytest.mark.parametrize(("charged", "status"), [((), EXPIRED), ((1,), SUCCEEDED)])
def test_retry_after_expiry_expires_instead_of_charging(
    charged: tuple[int, ...], status: str
) -> None:
    # The expiry timer has not fired yet when the retry comes in.
    s = end(pay(), "timeout")
    d = settle(s, StartAttempt(None), EXPIRES + 1, charged)
    assert d.session.status == status
    assert not [e for e in d.charges if isinstance(e, Charge)]
    assert d.refusal.code == ("already_paid" if charged else "invalid_state")


def test_pay_after_expiry_expires_a_created_session() -> None:
    d = step(fresh(), StartAttempt(CARD), EXPIRES)
    assert causes(d) == ["expired"]
    assert d.charges == ()
    assert d.refusal.code == "invalid_state"


# Successes for sessions that are over ------------------------------------------------------


@pytest.mark.parametrize("status", [FAILED, CANCELLED, EXPIRED])
def test_success_after_ending_without_success_is_refunded(status: str) -> None:
    s = TERMINAL_MAKERS[status]()
    d = step(s, ProviderResult(1, "succeeded", provider_ref="ch_9"), EXPIRES + 20_000)
    s2 = d.session
    assert causes(d) == ["late_success_refunded"]
    assert d.events[0].data["previous"] == status
    assert s2.status == status  # the session keeps its status
    assert s2.needs_review is True
    assert (s2.attempts[0].status, s2.attempts[0].provider_ref) == (A_REFUNDED, "ch_9")
    assert outbox(s2) == [("refund", 1, "pending")]
    assert d.charges == ()  # the refund is in the outbox, saved with the decision
    # The webhook again: applied once, so refunded once.
    again = step(s2, ProviderResult(1, "succeeded", provider_ref="ch_9"), EXPIRES + 30_000)
    assert again.events == () and again.session == s2


def test_second_success_is_refunded_as_a_duplicate() -> None:
    s = end(pay(), "timeout")
    s = retry(s).session  # the void of attempt 1 found nothing charged...
    s = step(s, ProviderResult(2, "succeeded"), s.current.started_at + 1_000).session
    # ...but the provider charged attempt 1 after all.
    d = step(s, ProviderResult(1, "succeeded"), s.updated_at + 5_000)
    s2 = d.session
    assert causes(d) == ["duplicate_charge_refunded"]
    assert d.events[0].data["previous"] == SUCCEEDED
    assert s2.status == SUCCEEDED and s2.needs_review
    assert [a.status for a in s2.attempts] == [A_REFUNDED, A_SUCCEEDED]
    assert outbox(s2) == [("refund", 1, "pending")]


# Results applied at most once -------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        ProviderResult(1, "succeeded"),
        ProviderResult(1, "declined", decline_code="card_declined"),
        ProviderResult(1, "declined", decline_code="stolen_card"),
        ProviderResult(1, "provider_error"),
        ProviderResult(1, "network_error"),
    ],
)
def test_the_same_result_twice_changes_nothing(result: ProviderResult) -> None:
    first = step(pay(), result, PAY + 1_000)
    assert first.events
    again = step(first.session, result, PAY + 1_200)
    assert again.events == () and again.charges == () and again.refusal is None
    assert again.session == first.session


@pytest.mark.parametrize(
    "failure",
    [
        ProviderResult(1, "declined", decline_code="card_declined"),
        ProviderResult(1, "declined", decline_code="stolen_card"),
        ProviderResult(1, "provider_error"),
        ProviderResult(1, "network_error"),
    ],
)
def test_failure_after_success_changes_nothing(failure: ProviderResult) -> None:
    s = succeeded_session()
    d = step(s, failure, PAY + 3_000)
    assert d.events == ()
    assert d.session.status == SUCCEEDED


def test_failure_for_a_voided_attempt_changes_nothing() -> None:
    s = retry(end(pay(), "timeout")).session
    d = step(s, ProviderResult(1, "declined", decline_code="card_declined"), s.updated_at + 10)
    assert d.events == ()


@pytest.mark.parametrize(
    ("result", "attempt_status"),
    [
        (ProviderResult(1, "declined", decline_code="card_declined"), A_DECLINED),
        (ProviderResult(1, "provider_error"), A_PROVIDER_ERROR),
    ],
)
def test_late_failure_settles_an_unknown_attempt(
    result: ProviderResult, attempt_status: str
) -> None:
    s = end(pay(), "timeout")
    d = step(s, result, DEADLINE + 1_000)
    s2 = d.session
    assert causes(d) == [result.outcome]
    assert d.events[0].data["previous"] == INTERRUPTED
    assert (s2.status, s2.retry_at) == (INTERRUPTED, s.retry_at)
    assert s2.attempts[0].status == attempt_status
    # The outcome is known now: the retry needs no void.
    d = step(s2, StartAttempt(None), s2.retry_at)
    assert causes(d) == ["attempt_started"]


def test_late_unrecoverable_decline_fails_an_interrupted_session() -> None:
    s = end(pay(), "timeout")
    d = step(s, ProviderResult(1, "declined", decline_code="stolen_card"), DEADLINE + 1_000)
    assert causes(d) == ["failed"]
    assert d.session.status == FAILED


def test_network_error_for_a_timed_out_attempt_changes_nothing() -> None:
    s = end(pay(), "timeout")
    assert step(s, ProviderResult(1, "network_error"), DEADLINE + 10).events == ()


def test_result_for_an_unknown_attempt_is_404() -> None:
    d = step(pay(), ProviderResult(2, "succeeded"), PAY + 10)
    assert d.refusal.code == "unknown_attempt"
    d = step(pay(), ProviderResult(0, "declined"), PAY + 10)
    assert d.refusal is not None and d.refusal.code == "unknown_attempt"


def test_unknown_outcome_is_refused() -> None:
    d = step(pay(), ProviderResult(1, "refunded"), PAY + 10)
    assert d.refusal.code == "invalid_field"


# Concurrency: successes racing other attempts and voids -----------------------------------


def two_attempts() -> Session:
    """Attempt 1 timed out and was voided clean; attempt 2 is in flight."""
    s = retry(end(pay(), "timeout")).session
    assert [a.status for a in s.attempts] == [A_VOIDED, A_PROCESSING]
    return s


def test_success_for_an_earlier_attempt_voids_the_one_in_flight() -> None:
    s = two_attempts()
    at = s.current.started_at + 700
    assert needs_void(s, ProviderResult(1, "succeeded"), at) == (2,)
    d = step(s, ProviderResult(1, "succeeded"), at, voids={2: False})
    s2 = d.session
    assert causes(d) == ["late_success"]
    assert d.events[0].data["previous"] == PROCESSING
    assert s2.status == SUCCEEDED and not s2.needs_review
    assert [a.status for a in s2.attempts] == [A_SUCCEEDED, A_VOIDED]
    assert s2.attempts[1].ended_at == at
    assert d.charges == ()


def test_success_while_the_other_in_flight_was_charged_too_refunds_it() -> None:
    s = two_attempts()
    at = s.current.started_at + 700
    d = step(s, ProviderResult(1, "succeeded"), at, voids={2: True})
    s2 = d.session
    assert s2.status == SUCCEEDED and s2.needs_review
    assert [a.status for a in s2.attempts] == [A_SUCCEEDED, A_REFUNDED]
    assert outbox(s2) == [("refund", 2, "pending")]
    # A second charge is a second success: its refund is named as such.
    assert causes(d) == ["late_success", "duplicate_charge_refunded"]


def test_success_while_a_retry_void_is_in_flight() -> None:
    s = end(pay(), "timeout")
    assert needs_void(s, StartAttempt(None), s.retry_at) == (1,)
    # While the service voids attempt 1, its success webhook is applied.
    won = step(s, ProviderResult(1, "succeeded"), s.retry_at + 5)
    assert won.session.status == SUCCEEDED
    # The retry is decided again on the fresh session with the void's answer.
    d = step(won.session, StartAttempt(None), s.retry_at + 10, voids={1: True})
    assert d.events == () and d.charges == ()  # no second success, no charge
    assert d.refusal.code == "already_paid"


def test_success_while_a_cancel_void_is_in_flight() -> None:
    s = pay()
    assert needs_void(s, Cancel(), PAY + 100) == (1,)
    won = step(s, ProviderResult(1, "succeeded"), PAY + 105)
    d = step(won.session, Cancel(), PAY + 110, voids={1: True})
    assert d.events == () and d.charges == ()
    assert d.session.status == SUCCEEDED
    assert d.refusal.code == "already_paid"


def test_stale_clean_void_after_a_success_changes_nothing() -> None:
    # The gateway's void lost the race to the provider's charge: the success stands.
    s = end(pay(), "timeout")
    won = step(s, ProviderResult(1, "succeeded"), s.retry_at + 5).session
    d = step(won, StartAttempt(None), s.retry_at + 10, voids={1: False})
    assert d.events == () and d.session.attempts[0].status == A_SUCCEEDED
    assert d.refusal is not None and d.refusal.code == "invalid_state"


def test_decline_while_a_retry_void_is_in_flight() -> None:
    s = end(pay(), "timeout")
    assert needs_void(s, StartAttempt(None), s.retry_at) == (1,)
    declined = step(s, ProviderResult(1, "declined", decline_code="card_declined"), s.retry_at + 5)
    d = step(declined.session, StartAttempt(None), s.retry_at + 10, voids={1: False})
    assert causes(d) == ["attempt_started"]  # attempt 1 keeps its known outcome
    assert [a.status for a in d.session.attempts] == [A_DECLINED, A_PROCESSING]


def test_two_retries_racing_charge_once() -> None:
    s = end(pay(), "timeout")
    first = step(s, StartAttempt(None), s.retry_at, voids={1: False})
    # The second retry was decided on the old state; the service redoes it on the new one.
    second = step(first.session, StartAttempt(None), s.retry_at + 1, voids={1: False})
    assert second.refusal.code == "invalid_state"
    assert second.charges == ()


# Stale ticks and seq ------------------------------------------------------------------------


def acknowledged(s: Session) -> Session:
    d = decide(s, SeeOutcome(s.status), s.updated_at + 1, RULES)
    assert isinstance(d, Decision) and d.session.outcome_seen_at is not None
    return d.session


@pytest.mark.parametrize(
    ("maker", "at"),
    [
        (fresh, EXPIRES - 1),
        (pay, DEADLINE - 1),
        (late_payment, EXPIRES + 5_000),  # expiry passed, but the attempt is in flight
        (lambda: end(pay(), "card_declined"), EXPIRES - 1),
        # Ended, and the outcome acknowledged (core/receipt.py): nothing more is due.
        (lambda: acknowledged(succeeded_session()), EXPIRES + 1_000_000),
        (lambda: acknowledged(failed_session()), EXPIRES + 1_000_000),
        (lambda: acknowledged(cancelled_session()), EXPIRES + 1_000_000),
        (lambda: acknowledged(expired_session()), EXPIRES + 1_000_000),
        # A timer set for attempt 1's deadline fires after the session moved on.
        (lambda: retry(end(pay(), "card_declined")).session, DEADLINE),
    ],
)
def test_stale_tick_changes_nothing(maker, at: int) -> None:  # type: ignore[no-untyped-def]
    s = maker()
    d = step(s, Tick(), at)
    assert d.events == () and d.charges == () and d.refusal is None
    assert d.session is s or d.session == s


def test_seq_counts_every_durable_event_of_a_long_life() -> None:
    seen: list[int] = []
    s = fresh()
    commands = [
        (StartAttempt(CARD), PAY, None),
        (Tick(), DEADLINE, None),  # timeout + retry_prompt
        (StartAttempt(None), DEADLINE + 2_000, {1: False}),  # voided + attempt_started
        (ProviderResult(2, "declined", decline_code="card_declined"), DEADLINE + 3_000, None),
        (StartAttempt(None), DEADLINE + 5_000, None),
        (ProviderResult(3, "succeeded"), DEADLINE + 6_000, None),
        (ProviderResult(1, "succeeded"), DEADLINE + 7_000, None),  # duplicate, refunded
    ]
    for command, at, voids in commands:
        d = step(s, command, at, voids)
        seen += [e.seq for e in d.events]
        s = d.session
    assert seen == list(range(1, 11))
    assert s.seq == 10
    assert (s.status, s.needs_review) == (SUCCEEDED, True)


def test_void_reporting_a_charge_outweighs_a_decline_that_landed_first() -> None:
    """The gateway said attempt 1 was charged; a contradictory decline webhook got
    there first. The retry must not start a second charge."""
    rules = replace(RULES, attempt_timeout_ms=1000, retry_delay_ms=0)
    s = new_session("ps_c", "o", 100, "EUR", {}, 0, rules)
    s = decide(s, StartAttempt({"card": "4242424242424242"}), 0, rules).session
    s = decide(s, Tick(), 1000, rules).session  # timeout: outcome unknown
    assert decide(s, StartAttempt(), 1000, rules) == NeedsVoid((1,))
    s = decide(s, ProviderResult(1, "declined", "card_declined"), 1001, rules).session
    decision = decide(s, StartAttempt(), 1002, rules, {1: True})
    assert decision.refusal is not None and decision.refusal.code == "already_paid"
    assert decision.session.status == "succeeded"
    assert not any(isinstance(e, Charge) for e in decision.charges)
    assert [a.status for a in decision.session.attempts] == ["succeeded"]
