"""The payment session state machine: ``decide(session, command, now, rules, voids)``.

Pure: no I/O, no clock, no randomness. Every rule of docs/protocol.md section 2 lives
in this package: the customer's commands and the timer here, the provider's word in
``results.py``, attempts that end without success in ``endings.py``, voids in
``voids.py`` and the outbox in ``outbox.py``. The service around it loads a session,
asks ``decide``, saves the new session with its events (compare-and-set), then asks
the gateway for a charge. Money that must go back, a hold to capture or to release, is
an effect in the session's outbox, saved with the decision and carried out by a loop
at the edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .commands import (
    Cancel,
    Command,
    Interrupt,
    ProviderResult,
    Reference,
    SeeOutcome,
    StartAttempt,
    Tick,
)
from .decision import Charge, Decision, NeedsVoid, Refusal, Rules, Tx, refuse
from .effects import CAPTURE, REFUND
from .endings import end_attempt, expire
from .evolve import evolve
from .outbox import (
    DeliveryOutcome,
    EffectOutcome,
    ResolveReview,
    SendAgain,
    record_delivery,
    record_outcome,
    resolve_review,
    send_again,
)
from .protocol import ErrorCode
from .receipt import outcome_unseen, see_outcome, watch_outcome
from .refunds import MarkDone, Refund, mark_done, refund
from .results import provider_result, reference
from .session import (
    A_NETWORK_ERROR,
    A_PROCESSING,
    A_TIMEOUT,
    CANCELLED,
    CREATED,
    FAILED,
    INTERRUPTED,
    PROCESSING,
    SUCCEEDED,
    Attempt,
    Session,
    idempotency_key,
)
from .voids import already_paid, missing, paid_meanwhile, settle_voids, unknown

__all__ = [
    "Cancel",
    "Charge",
    "Command",
    "Decision",
    "DeliveryOutcome",
    "EffectOutcome",
    "Interrupt",
    "MarkDone",
    "NeedsVoid",
    "ProviderResult",
    "Reference",
    "Refund",
    "Refusal",
    "ResolveReview",
    "Rules",
    "SeeOutcome",
    "SendAgain",
    "StartAttempt",
    "Tick",
    "decide",
    "new_session",
]


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


def decide(
    session: Session,
    command: Command,
    now: int,
    rules: Rules,
    voids: Mapping[int, bool] | None = None,
) -> Decision | NeedsVoid:
    """What ``command`` does to ``session`` at time ``now`` (epoch ms)."""
    asked = _asked(command)
    if asked is not None:
        done = session.answered(*asked)
        if done is not None:
            # The same keyed request again, its kept answer lost (the engine's reply to
            # the save was lost, the worker was stopped or died before keeping it): what
            # it did is the answer, with the session as it stands. Deciding again would
            # refuse it (the session cancelled, the attempt interrupted by this very
            # request), and the key would keep that refusal.
            return Decision(session, refusal=_refusal_again(done[2]))
    result = _decide(session, command, now, rules, voids or {})
    if isinstance(result, NeedsVoid):
        return result
    # Whatever ended the session, the outcome receipt's clock starts with it.
    result = watch_outcome(session, result, now, rules)
    if asked is not None and result.to_save:
        refused = result.refusal.code.value if result.refusal is not None else ""
        result = evolve(result, session=result.session.with_asked(*asked, refused))
    return result


# The keyed commands a session remembers (``Session.asked``), by the route's name.
# Attempts and refunds remember theirs in what they make (``started_by``, ``asked_by``).
_REMEMBERED: dict[type, str] = {
    Cancel: "cancel",
    Interrupt: "interrupt",
    SeeOutcome: "seen",
    ProviderResult: "complete",
    ResolveReview: "review",
    MarkDone: "done",
    SendAgain: "send_again",
}


def _asked(command: Command) -> tuple[str, str] | None:
    """(command, request) of a keyed command the session remembers; None otherwise."""
    name = _REMEMBERED.get(type(command))
    request = getattr(command, "request", None)
    if name is None or request is None:
        return None
    # The digest is of the key and the body; these routes name what they act on in
    # their path (the key is kept per path), so the name carries it: the same key and
    # note marking two effects done are two requests.
    if isinstance(command, MarkDone):
        name = f"done {command.kind}:{command.attempt}:{command.number}"
    elif isinstance(command, SendAgain):
        name = f"send_again {command.event['id']}"
    return name, request


def _refusal_again(code: str) -> Refusal | None:
    """The refusal a remembered request was answered with, if any: only a change that
    was also refused is remembered with one (a cancel whose void found the money
    taken: the session succeeded, answered ``already_paid``)."""
    if not code:
        return None
    if code == ErrorCode.ALREADY_PAID:
        return already_paid()
    try:
        known = ErrorCode(code)
    except ValueError:  # a code of a newer version, read during a rolling deploy
        known = ErrorCode.INVALID_STATE
    return Refusal(known, "this request was refused when it was decided")


def _decide(
    session: Session,
    command: Command,
    now: int,
    rules: Rules,
    voids: Mapping[int, bool],
) -> Decision | NeedsVoid:
    if isinstance(command, StartAttempt):
        return _start_attempt(session, command, now, rules, voids)
    if isinstance(command, Interrupt):
        return _interrupt(session, command, now, rules, voids)
    if isinstance(command, Cancel):
        return _cancel(session, now, voids)
    if isinstance(command, ProviderResult):
        return provider_result(session, command, now, rules, voids)
    if isinstance(command, Reference):
        return reference(session, command, now)
    if isinstance(command, Tick):
        return _tick(session, now, rules, voids)
    if isinstance(command, EffectOutcome):
        return _effect_outcome(session, command, now, rules, voids)
    if isinstance(command, ResolveReview):
        return resolve_review(session, command, now)
    if isinstance(command, DeliveryOutcome):
        return record_delivery(session, command, now, rules)
    if isinstance(command, SendAgain):
        return send_again(session, command, now)
    if isinstance(command, SeeOutcome):
        return see_outcome(session, command, now)
    if isinstance(command, Refund):
        return refund(session, command, now)
    if isinstance(command, MarkDone):
        found = mark_done(session, command)
        if isinstance(found, Decision):
            return found
        return _effect_outcome(session, found, now, rules, voids)
    raise TypeError(f"not a command: {command!r}")


def started_by(s: Session, request: str | None) -> Attempt | None:
    """The attempt the request ``request`` started, if it started one."""
    if request is None:
        return None
    return next((a for a in s.attempts if a.request == request), None)


def _start_attempt(
    s: Session, cmd: StartAttempt, now: int, rules: Rules, voids: Mapping[int, bool]
) -> Decision | NeedsVoid:
    if started_by(s, cmd.request) is not None:
        # The same request again, its kept answer lost (the engine's reply to the save
        # was lost, the worker was stopped or died before keeping it): the attempt it
        # started is the answer, with the session as it stands. Deciding again would
        # refuse it (the session is processing, or has moved on since), and the key
        # would keep that refusal; checked first for the same reason.
        return Decision(s)
    if s.status == PROCESSING:
        return refuse(s, ErrorCode.INVALID_STATE, f"attempt {s.attempt} is still processing")
    if s.status == FAILED and s.attempt >= s.max_attempts:
        return refuse(
            s, ErrorCode.MAX_ATTEMPTS_REACHED, f"all {s.max_attempts} attempts have been used"
        )
    if paid_meanwhile(s, voids):
        return Decision(s, refusal=already_paid())
    if s.terminal:
        return refuse(s, ErrorCode.INVALID_STATE, f"the session is {s.status}")
    method = cmd.payment_method if cmd.payment_method is not None else s.payment_method
    if method is None:
        return refuse(
            s, ErrorCode.INVALID_FIELD, "payment_method is required for the first attempt"
        )
    if now >= s.expires_at:
        # The expiry timer has not fired yet; expire now rather than start an attempt.
        decision = expire(s, now, voids)
        if isinstance(decision, NeedsVoid):
            return decision
        refusal = (
            already_paid()
            if decision.session.status == SUCCEEDED
            else Refusal(ErrorCode.INVALID_STATE, "the session has expired")
        )
        return evolve(decision, refusal=refusal)
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
    pending = unknown(s, voids)
    needed = missing(pending, voids)
    if needed:
        return needed
    tx = Tx(s, now)
    if settle_voids(tx, pending, voids, emit=True):
        return tx.done(already_paid())
    number = s.attempt + 1
    previous = tx.s.status
    started = Attempt(number=number, status=A_PROCESSING, started_at=now, request=cmd.request)
    tx.update(
        attempts=tx.s.attempts + (started,),
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
    return end_attempt(s, s.attempt, A_NETWORK_ERROR, cmd.reason, None, True, now, rules, voids)


def _cancel(s: Session, now: int, voids: Mapping[int, bool]) -> Decision | NeedsVoid:
    if paid_meanwhile(s, voids):
        return Decision(s, refusal=already_paid())
    if s.terminal:
        return refuse(s, ErrorCode.INVALID_STATE, f"the session is already {s.status}")
    pending = unknown(s, voids, include_processing=True)
    needed = missing(pending, voids)
    if needed:
        return needed
    tx = Tx(s, now)
    previous = s.status
    if settle_voids(tx, pending, voids, emit=False):
        return tx.done(already_paid())
    tx.update(status=CANCELLED, deadline=None, retry_at=None)
    tx.state(previous, "cancelled")
    return tx.done()


def _tick(s: Session, now: int, rules: Rules, voids: Mapping[int, bool]) -> Decision | NeedsVoid:
    if s.status == PROCESSING and s.deadline is not None and now >= s.deadline:
        return end_attempt(s, s.attempt, A_TIMEOUT, "timeout", None, True, now, rules, voids)
    if s.status in (CREATED, INTERRUPTED) and now >= s.expires_at:
        return expire(s, now, voids, rules)
    return outcome_unseen(s, now) or Decision(s)


def _effect_outcome(
    s: Session, cmd: EffectOutcome, now: int, rules: Rules, voids: Mapping[int, bool]
) -> Decision | NeedsVoid:
    """Record the provider's answer to an effect; what a confirmed capture or void found
    out about the money is then the provider's word on the attempt, in the same save:
    money taken is a success (captured: the session succeeds now; found taken by a void:
    a late success, given back if the session is over), a hold gone is a failure."""
    effect = s.effect(cmd.kind, cmd.attempt, cmd.number)
    recorded = record_outcome(s, cmd, now, rules)
    if effect is None or not effect.pending or not cmd.ok or cmd.kind == REFUND:
        return recorded
    if cmd.charged:
        word = ProviderResult(cmd.attempt, "succeeded")
    elif cmd.kind == CAPTURE:
        word = ProviderResult(cmd.attempt, "provider_error")
    else:
        return recorded  # a hold released: nothing moved, nothing more to decide
    after = provider_result(recorded.session, word, now, rules, voids)
    if isinstance(after, NeedsVoid):
        return after
    return recorded.then(after)
