"""The payment session state machine: ``decide(session, command, now, rules, voids)``.

Pure: no I/O, no clock, no randomness. Every rule of docs/protocol.md section 2 lives here.
The service around it loads a session, asks ``decide``, saves the new session with
its events (compare-and-set), then asks the gateway for a charge. Money that must go
back, or an authorization to capture, is an effect in the session's outbox, saved
with the decision and carried out by a loop at the edge (``outbox.py`` has its rules).

A gateway void is I/O, so the machine cannot do it: when a command needs an attempt
whose outcome is unknown to be voided first, ``decide`` answers ``NeedsVoid``; the
service asks the gateway and calls ``decide`` again with the answers in ``voids``
(attempt number -> True when the gateway says that attempt was charged after all).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from .decision import Charge, Decision, NeedsVoid, Refusal, Rules, Tx, refuse
from .effects import REFUND, VOID
from .outbox import (
    EffectOutcome,
    ResolveReview,
    capture,
    give_back,
    record_outcome,
    resolve_review,
)
from .protocol import ErrorCode
from .session import (
    A_DECLINED,
    A_NETWORK_ERROR,
    A_PROCESSING,
    A_PROVIDER_ERROR,
    A_REFUNDED,
    A_SUCCEEDED,
    A_TIMEOUT,
    A_VOIDED,
    CANCELLED,
    CREATED,
    EXPIRED,
    FAILED,
    FINAL_ATTEMPT_STATUSES,
    INTERRUPTED,
    OUTCOME_UNKNOWN,
    PROCESSING,
    SUCCEEDED,
    Attempt,
    Session,
    idempotency_key,
)

__all__ = [
    "Cancel",
    "Charge",
    "Command",
    "Decision",
    "EffectOutcome",
    "Interrupt",
    "NeedsVoid",
    "ProviderResult",
    "Refusal",
    "ResolveReview",
    "Rules",
    "StartAttempt",
    "Tick",
    "decide",
    "new_session",
]

# Declines no retry can fix: the session fails at once.
NON_RETRYABLE_DECLINES = frozenset(
    {"stolen_card", "lost_card", "pickup_card", "fraudulent", "restricted_card"}
)

REASON_MESSAGES = {
    "timeout": "no result from the provider in {seconds:g} s",
    "network_error": "the connection to the provider was lost; the outcome is unknown",
    "declined": "the card was declined",
    "provider_error": "the provider reported an error",
}


# Commands -------------------------------------------------------------------


@dataclass(frozen=True)
class StartAttempt:
    """Pay (first attempt) or retry; ``payment_method`` None reuses the last one."""

    payment_method: dict[str, Any] | None = None


@dataclass(frozen=True)
class Interrupt:
    """The client lost the attempt (say, its network went away)."""

    reason: str = "network_error"


@dataclass(frozen=True)
class Cancel:
    pass


@dataclass(frozen=True)
class ProviderResult:
    """A provider's word on attempt ``attempt``: from a webhook, the merchant, or the
    gateway's own reply (``network_error`` when it could not be reached)."""

    attempt: int
    outcome: str  # succeeded | declined | provider_error | network_error
    decline_code: str | None = None
    provider_ref: str | None = None


@dataclass(frozen=True)
class Tick:
    """The timer loop looks at the session: deadline or expiry may have passed."""


Command = StartAttempt | Interrupt | Cancel | ProviderResult | Tick | EffectOutcome | ResolveReview


def new_session(
    session_id: str,
    order_id: str,
    amount: int,
    currency: str,
    metadata: dict[str, Any],
    now: int,
    rules: Rules,
) -> Session:
    return Session(
        id=session_id,
        order_id=order_id,
        amount=amount,
        currency=currency,
        created_at=now,
        updated_at=now,
        expires_at=now + rules.session_ttl_ms,
        max_attempts=rules.max_attempts,
        metadata=metadata,
    )


def _unknown(
    session: Session, voids: Mapping[int, bool], include_processing: bool = False
) -> tuple[int, ...]:
    """Attempts to void before the session moves on. An attempt the gateway already
    reported charged stays in the list even if a failure webhook has since landed for
    it: money that moved outweighs a contradictory answer, so no second charge starts."""
    wanted = OUTCOME_UNKNOWN | ({A_PROCESSING} if include_processing else set())
    return tuple(
        a.number
        for a in session.attempts
        if a.status in wanted or (voids.get(a.number) and a.status not in (A_SUCCEEDED, A_REFUNDED))
    )


def _missing(numbers: tuple[int, ...], voids: Mapping[int, bool]) -> NeedsVoid | None:
    missing = tuple(n for n in numbers if n not in voids)
    return NeedsVoid(missing) if missing else None


def _settle_voids(tx: Tx, numbers: tuple[int, ...], voids: Mapping[int, bool], emit: bool) -> bool:
    """Apply the gateway's void answers; True when one says the money moved after all.

    A charged attempt makes the session succeed (cause ``late_success``). With
    ``emit``, each clean void is its own ``state`` event (cause ``voided``); without,
    it is folded into the transition that follows.
    """
    for number in numbers:
        if voids[number]:
            previous = tx.s.status
            tx.set_attempt(number, status=A_SUCCEEDED, ended_at=_ended(tx, number))
            tx.update(status=SUCCEEDED, deadline=None, retry_at=None)
            tx.state(previous, "late_success")
            return True
        tx.set_attempt(number, status=A_VOIDED, ended_at=_ended(tx, number))
        if tx.s.status == PROCESSING and tx.s.attempt == number:
            tx.update(deadline=None)
        if emit:
            tx.state(tx.s.status, "voided")
    return False


def _ended(tx: Tx, number: int) -> int:
    attempt = tx.s.attempt_by_number(number)
    assert attempt is not None
    return attempt.ended_at if attempt.ended_at is not None else tx.now


def _already_paid() -> Refusal:
    return Refusal(
        ErrorCode.ALREADY_PAID, "the provider charged an earlier attempt: the session is paid"
    )


def _paid_meanwhile(s: Session, voids: Mapping[int, bool]) -> bool:
    """The void this command asked for found a charge, and the success was recorded first
    (a webhook won the race): the command is still answered ``already_paid``."""
    return s.status == SUCCEEDED and any(voids.values())


def decide(
    session: Session,
    command: Command,
    now: int,
    rules: Rules,
    voids: Mapping[int, bool] | None = None,
) -> Decision | NeedsVoid:
    """What ``command`` does to ``session`` at time ``now`` (epoch ms)."""
    voids = voids or {}
    if isinstance(command, StartAttempt):
        return _start_attempt(session, command, now, rules, voids)
    if isinstance(command, Interrupt):
        return _interrupt(session, command, now, rules, voids)
    if isinstance(command, Cancel):
        return _cancel(session, now, voids)
    if isinstance(command, ProviderResult):
        return _provider_result(session, command, now, rules, voids)
    if isinstance(command, Tick):
        return _tick(session, now, rules, voids)
    if isinstance(command, EffectOutcome):
        return record_outcome(session, command, now, rules)
    if isinstance(command, ResolveReview):
        return resolve_review(session, command, now)
    raise TypeError(f"not a command: {command!r}")


def _start_attempt(
    s: Session, cmd: StartAttempt, now: int, rules: Rules, voids: Mapping[int, bool]
) -> Decision | NeedsVoid:
    if s.status == PROCESSING:
        return refuse(s, ErrorCode.INVALID_STATE, f"attempt {s.attempt} is still processing")
    if s.status == FAILED and s.attempt >= s.max_attempts:
        return refuse(
            s, ErrorCode.MAX_ATTEMPTS_REACHED, f"all {s.max_attempts} attempts have been used"
        )
    if _paid_meanwhile(s, voids):
        return Decision(s, refusal=_already_paid())
    if s.terminal:
        return refuse(s, ErrorCode.INVALID_STATE, f"the session is {s.status}")
    method = cmd.payment_method if cmd.payment_method is not None else s.payment_method
    if method is None:
        return refuse(
            s, ErrorCode.INVALID_FIELD, "payment_method is required for the first attempt"
        )
    if now >= s.expires_at:
        # The expiry timer has not fired yet; expire now rather than start an attempt.
        decision = _expire(s, now, voids)
        if isinstance(decision, NeedsVoid):
            return decision
        refusal = (
            _already_paid()
            if decision.session.status == SUCCEEDED
            else Refusal(ErrorCode.INVALID_STATE, "the session has expired")
        )
        return replace(decision, refusal=refusal)
    if s.status == INTERRUPTED:
        if s.attempt >= s.max_attempts:
            return refuse(
                s, ErrorCode.MAX_ATTEMPTS_REACHED, f"all {s.max_attempts} attempts have been used"
            )
        if s.retry_at is not None and now < s.retry_at:
            return refuse(
                s,
                ErrorCode.RETRY_NOT_YET_ALLOWED,
                f"retry is allowed from {s.retry_at} ({s.retry_at - now} ms from now)",
            )
    unknown = _unknown(s, voids)
    needed = _missing(unknown, voids)
    if needed:
        return needed
    tx = Tx(s, now)
    if _settle_voids(tx, unknown, voids, emit=True):
        return tx.done(_already_paid())
    number = s.attempt + 1
    previous = tx.s.status
    tx.update(
        attempts=tx.s.attempts + (Attempt(number=number, status=A_PROCESSING, started_at=now),),
        status=PROCESSING,
        attempt=number,
        deadline=now + rules.attempt_timeout_ms,
        retry_at=None,
        payment_method=method,
    )
    tx.state(previous, "attempt_started")
    tx.charges.append(Charge(number, idempotency_key(s.id, number), method, s.amount, s.currency))
    return tx.done()


def _interrupt(
    s: Session, cmd: Interrupt, now: int, rules: Rules, voids: Mapping[int, bool]
) -> Decision | NeedsVoid:
    if s.status != PROCESSING:
        return refuse(
            s, ErrorCode.INVALID_STATE, f"no attempt is processing (the session is {s.status})"
        )
    return _end_attempt(s, s.attempt, A_NETWORK_ERROR, cmd.reason, None, True, now, rules, voids)


def _end_attempt(
    s: Session,
    number: int,
    attempt_status: str,
    reason: str,
    decline_code: str | None,
    retryable: bool,
    now: int,
    rules: Rules,
    voids: Mapping[int, bool],
) -> Decision | NeedsVoid:
    """Attempt ``number`` (the one processing) ended without success."""
    if not retryable or number >= s.max_attempts:
        final = FAILED
    elif now >= s.expires_at:
        final = EXPIRED
    else:
        final = INTERRUPTED
    unknown = attempt_status in OUTCOME_UNKNOWN
    if final != INTERRUPTED and unknown:
        needed = _missing((number,), voids)
        if needed:
            return needed
    message = REASON_MESSAGES[reason].format(seconds=rules.attempt_timeout_ms / 1000)
    last_error: dict[str, Any] = {"reason": reason, "attempt": number, "message": message}
    if decline_code is not None:
        last_error["decline_code"] = decline_code
    tx = Tx(s, now)
    previous = s.status
    tx.set_attempt(number, status=attempt_status, ended_at=now, decline_code=decline_code)
    tx.update(last_error=last_error, deadline=None)
    if final == INTERRUPTED:
        tx.update(status=INTERRUPTED, retry_at=now + rules.retry_delay_ms)
        tx.state(previous, reason)
        tx.retry_prompt(number, reason, unknown)
        return tx.done()
    if unknown and _settle_voids(tx, (number,), voids, emit=False):
        return tx.done()
    tx.update(status=final, retry_at=None)
    tx.state(previous, "expired" if final == EXPIRED else "failed")
    return tx.done()


def _cancel(s: Session, now: int, voids: Mapping[int, bool]) -> Decision | NeedsVoid:
    if _paid_meanwhile(s, voids):
        return Decision(s, refusal=_already_paid())
    if s.terminal:
        return refuse(s, ErrorCode.INVALID_STATE, f"the session is already {s.status}")
    unknown = _unknown(s, voids, include_processing=True)
    needed = _missing(unknown, voids)
    if needed:
        return needed
    tx = Tx(s, now)
    previous = s.status
    if _settle_voids(tx, unknown, voids, emit=False):
        return tx.done(_already_paid())
    tx.update(status=CANCELLED, deadline=None, retry_at=None)
    tx.state(previous, "cancelled")
    return tx.done()


def _expire(s: Session, now: int, voids: Mapping[int, bool]) -> Decision | NeedsVoid:
    unknown = _unknown(s, voids)
    needed = _missing(unknown, voids)
    if needed:
        return needed
    tx = Tx(s, now)
    previous = s.status
    if _settle_voids(tx, unknown, voids, emit=False):
        return tx.done()
    tx.update(status=EXPIRED, deadline=None, retry_at=None)
    tx.state(previous, "expired")
    return tx.done()


def _tick(s: Session, now: int, rules: Rules, voids: Mapping[int, bool]) -> Decision | NeedsVoid:
    if s.status == PROCESSING and s.deadline is not None and now >= s.deadline:
        return _end_attempt(s, s.attempt, A_TIMEOUT, "timeout", None, True, now, rules, voids)
    if s.status in (CREATED, INTERRUPTED) and now >= s.expires_at:
        return _expire(s, now, voids)
    return Decision(s)


def _provider_result(
    s: Session, cmd: ProviderResult, now: int, rules: Rules, voids: Mapping[int, bool]
) -> Decision | NeedsVoid:
    attempt = s.attempt_by_number(cmd.attempt)
    if attempt is None:
        return refuse(s, ErrorCode.UNKNOWN_ATTEMPT, f"the session has no attempt {cmd.attempt}")
    if cmd.outcome == "succeeded":
        return _success(s, attempt, cmd, now, rules, voids)
    if cmd.outcome not in ("declined", "provider_error", "network_error"):
        return refuse(s, ErrorCode.INVALID_FIELD, f"unknown outcome {cmd.outcome!r}")
    if attempt.status in FINAL_ATTEMPT_STATUSES:
        return Decision(s)  # applied at most once: the attempt already has its result
    if attempt.status == A_PROCESSING:
        if cmd.outcome == "declined":
            retryable = cmd.decline_code not in NON_RETRYABLE_DECLINES
            return _end_attempt(
                s,
                attempt.number,
                A_DECLINED,
                "declined",
                cmd.decline_code,
                retryable,
                now,
                rules,
                voids,
            )
        status = A_PROVIDER_ERROR if cmd.outcome == "provider_error" else A_NETWORK_ERROR
        return _end_attempt(s, attempt.number, status, cmd.outcome, None, True, now, rules, voids)
    # The attempt timed out or lost its answer, and now the provider says it failed:
    # the outcome is known, so no void is needed for it any more.
    if cmd.outcome == "network_error":
        return Decision(s)
    tx = Tx(s, now)
    previous = s.status
    new_status = A_DECLINED if cmd.outcome == "declined" else A_PROVIDER_ERROR
    tx.set_attempt(attempt.number, status=new_status, decline_code=cmd.decline_code)
    if (
        cmd.outcome == "declined"
        and cmd.decline_code in NON_RETRYABLE_DECLINES
        and s.status == INTERRUPTED
    ):
        tx.update(status=FAILED, retry_at=None)
        tx.state(previous, "failed")
    else:
        tx.state(previous, cmd.outcome)
    return tx.done()


def _success(
    s: Session,
    attempt: Attempt,
    cmd: ProviderResult,
    now: int,
    rules: Rules,
    voids: Mapping[int, bool],
) -> Decision | NeedsVoid:
    if attempt.status in (A_SUCCEEDED, A_REFUNDED):
        return Decision(s)  # a duplicate: this success was applied already
    if rules.authorize_first and attempt.status == A_VOIDED:
        # The provider confirmed the void of this authorization: the success it
        # reports was overtaken, and no money moved. The outbox voids it once more, in
        # case the void was lost on its way; nothing else changes.
        if s.effect(VOID, attempt.number) is not None:
            return Decision(s)
        tx = Tx(s, now)
        tx.add_effect(VOID, attempt.number)
        return tx.done(quiet=True)
    if s.terminal:
        # Money moved for a session that is over: give it back and flag it.
        tx = Tx(s, now)
        tx.set_attempt(
            attempt.number,
            status=A_REFUNDED,
            ended_at=attempt.ended_at if attempt.ended_at is not None else now,
            provider_ref=cmd.provider_ref,
        )
        tx.update(needs_review=True)
        give_back(tx, attempt.number, rules)
        cause = "duplicate_charge_refunded" if s.status == SUCCEEDED else "late_success_refunded"
        tx.state(s.status, cause)
        return tx.done()
    others = tuple(
        a.number
        for a in s.attempts
        if a.number != attempt.number and a.status in OUTCOME_UNKNOWN | {A_PROCESSING}
    )
    needed = _missing(others, voids)
    if needed:
        return needed
    tx = Tx(s, now)
    previous = s.status
    duplicates: list[int] = []
    for number in others:
        if voids[number]:
            # Both attempts were charged: keep this one, give the other back. The void
            # found the money moved, so even an authorization was captured: refund it.
            tx.set_attempt(number, status=A_REFUNDED, ended_at=_ended(tx, number))
            tx.update(needs_review=True)
            tx.add_effect(REFUND, number)
            duplicates.append(number)
        else:
            tx.set_attempt(number, status=A_VOIDED, ended_at=_ended(tx, number))
    late = attempt.status != A_PROCESSING
    tx.set_attempt(
        attempt.number,
        status=A_SUCCEEDED,
        ended_at=attempt.ended_at if late and attempt.ended_at is not None else now,
        provider_ref=cmd.provider_ref,
    )
    tx.update(status=SUCCEEDED, deadline=None, retry_at=None)
    capture(tx, attempt.number, rules)
    tx.state(previous, "late_success" if late else "succeeded")
    for _number in duplicates:
        # A charge the void found is a second success: name its refund (docs/protocol.md 2).
        tx.state(SUCCEEDED, "duplicate_charge_refunded")
    return tx.done()
