"""The outcome receipt: proof that the customer saw how the payment ended.

Pure, like the machine. When a decision ends a session (succeeded, failed, cancelled,
expired), ``watch_outcome`` sets when the shop must hear that nobody saw it:
``outcome_unseen_ms`` later (the timer loop looks at the session then, through
``Session.next_due``). A checkout that draws the outcome acknowledges it
(``SeeOutcome``): ``see_outcome`` records ``outcome_seen_at`` with a durable ``state``
event (cause ``outcome_seen``) and clears the due time. If the time comes first,
``outcome_unseen`` makes a durable ``state`` event with cause ``outcome_unseen``, from
which core/merchant.py makes the merchant event ``session.outcome_unseen``: saved
with the decision, so it exists once (the due time is cleared in the same save, and a
tick that loses the race decides again on the saved session). An acknowledgement
after it is recorded all the same.
"""

from __future__ import annotations

from .commands import SeeOutcome
from .decision import Decision, Rules, Tx, refuse
from .evolve import evolve
from .protocol import TERMINAL_STATUSES, ErrorCode
from .session import Session

SEEN = "outcome_seen"
UNSEEN = "outcome_unseen"


def watch_outcome(before: Session, decision: Decision, now: int, rules: Rules) -> Decision:
    """``decision`` with the unseen-outcome time set when it ends the session."""
    after = decision.session
    if (
        rules.outcome_unseen_ms <= 0
        or before.terminal
        or not after.terminal
        or after.outcome_seen_at is not None
    ):
        return decision
    return evolve(decision, session=evolve(after, unseen_due=now + rules.outcome_unseen_ms))


def see_outcome(s: Session, cmd: SeeOutcome, now: int) -> Decision:
    """Record that a checkout drew ``cmd.status``; again changes nothing."""
    if not s.terminal:
        return refuse(s, ErrorCode.INVALID_STATE, f"the session has no outcome yet ({s.status})")
    if cmd.status != s.status:
        return refuse(
            s, ErrorCode.INVALID_STATE, f"the session's outcome is {s.status}, not {cmd.status}"
        )
    if s.outcome_seen_at is not None:
        return Decision(s)
    tx = Tx(s, now)
    tx.update(outcome_seen_at=now, unseen_due=None)
    tx.state(s.status, SEEN)
    return tx.done()


def outcome_unseen(s: Session, now: int) -> Decision | None:
    """The shop's notice that nobody saw the outcome, when it is due; else None."""
    if (
        s.status not in TERMINAL_STATUSES
        or s.unseen_due is None
        or now < s.unseen_due
        or s.outcome_seen_at is not None
    ):
        return None
    tx = Tx(s, now)
    tx.update(unseen_due=None)
    tx.state(s.status, UNSEEN)
    return tx.done()
