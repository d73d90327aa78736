"""Voids a decision waits for: which attempts must be voided before a session moves
on, and what the gateway's answers do. Pure, like the machine.

A gateway void is I/O, so the machine cannot do it: when a command needs an attempt
whose outcome is unknown to be voided first, ``decide`` answers ``NeedsVoid``; the
service asks the gateway and calls ``decide`` again with the answers in ``voids``
(attempt number -> True when the gateway says that attempt was charged after all).
"""

from __future__ import annotations

from collections.abc import Mapping

from .decision import NeedsVoid, Refusal, Tx
from .protocol import ErrorCode
from .session import (
    A_PROCESSING,
    A_REFUNDED,
    A_SUCCEEDED,
    OUTCOME_UNKNOWN,
    PROCESSING,
    SUCCEEDED,
    Session,
)


def unknown(
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


def missing(numbers: tuple[int, ...], voids: Mapping[int, bool]) -> NeedsVoid | None:
    absent = tuple(n for n in numbers if n not in voids)
    return NeedsVoid(absent) if absent else None


def settle_voids(tx: Tx, numbers: tuple[int, ...], voids: Mapping[int, bool], emit: bool) -> bool:
    """Apply the gateway's void answers; True when one says the money moved after all.

    A charged attempt makes the session succeed (cause ``late_success``). With
    ``emit``, each clean void is its own ``state`` event (cause ``voided``); without,
    it is folded into the transition that follows.
    """
    for number in numbers:
        if voids[number]:
            previous = tx.s.status
            tx.set_attempt(number, status=A_SUCCEEDED, ended_at=tx.ended(number))
            tx.update(status=SUCCEEDED, deadline=None, retry_at=None)
            tx.state(previous, "late_success")
            return True
        tx.void_attempt(number)
        if tx.s.status == PROCESSING and tx.s.attempt == number:
            tx.update(deadline=None)
        if emit:
            tx.state(tx.s.status, "voided")
    return False


def already_paid() -> Refusal:
    return Refusal(
        ErrorCode.ALREADY_PAID, "the provider charged an earlier attempt: the session is paid"
    )


def paid_meanwhile(s: Session, voids: Mapping[int, bool]) -> bool:
    """The void this command asked for found a charge, and the success was recorded first
    (a webhook won the race): the command is still answered ``already_paid``."""
    return s.status == SUCCEEDED and any(voids.values())
