"""The machine's vocabulary: the rules it decides by, what it answers, and ``Tx``,
which builds one decision event by event. Pure, like the machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .codec import Message
from .effects import CANCELLED, CAPTURE, VOID, GatewayEffect
from .evolve import evolve
from .protocol import ErrorCode
from .session import A_VOIDED, Session


@dataclass(frozen=True)
class Rules:
    """What the machine decides by: a value, built from the settings by
    ``paylive.settings.machine_rules`` (the only source outside tests)."""

    attempt_timeout_ms: int
    max_attempts: int
    retry_delay_ms: int
    session_ttl_ms: int
    # The outbox: backoff between tries, and when a failing effect flags the session
    # for review.
    effect_retry_base_ms: int = 1_000
    effect_retry_cap_ms: int = 60_000
    effect_review_after_ms: int = 900_000
    # Merchant events (core/merchant.py): which are made, whether they are posted
    # (a webhook URL is set) and the backoff and window of their retries.
    merchant_events: str = "outcomes"
    webhooks: bool = False
    merchant_retry_base_ms: int = 1_000
    merchant_retry_cap_ms: int = 3_600_000
    merchant_retry_for_ms: int = 3 * 24 * 3_600_000
    # An ended session whose outcome no checkout acknowledged this long after it ended
    # makes session.outcome_unseen (0: never; core/receipt.py).
    outcome_unseen_ms: int = 120_000
    # PAYLIVE_DATABASE_URL is set: an ended session owes the archive its last state
    # (core/outbox.py ``owe_archive``).
    archive: bool = False


@dataclass(frozen=True)
class Charge:
    """Ask the provider for attempt ``attempt``'s money, right after the save. Not an
    outbox effect: a charge that never arrives is an attempt that times out and is
    voided, which the rules of docs/protocol.md section 2 already handle."""

    attempt: int
    key: str
    payment_method: dict[str, Any]
    amount: int
    currency: str


@dataclass(frozen=True)
class Refusal:
    """The command is refused: an ``ErrorCode`` and a sentence. How the refusal travels
    (an HTTP status, a socket ``error``) is the edge's business."""

    code: ErrorCode
    message: str


@dataclass(frozen=True)
class NeedsVoid:
    """Void these attempts at the gateway, then decide again with the answers."""

    attempts: tuple[int, ...]


@dataclass(frozen=True)
class Decision:
    session: Session
    events: tuple[Message, ...] = ()
    charges: tuple[Charge, ...] = ()
    refusal: Refusal | None = None
    # The session changed without a durable event (an effect's failed try, a provider
    # reference, a capture or release put in the outbox): it is saved all the same.
    quiet: bool = False

    @property
    def to_save(self) -> bool:
        return bool(self.events) or self.quiet

    def then(self, after: Decision) -> Decision:
        """This decision followed by ``after``, decided on this one's session: one save."""
        return Decision(
            after.session,
            self.events + after.events,
            self.charges + after.charges,
            after.refusal,
            self.quiet or after.quiet,
        )


def refuse(session: Session, code: ErrorCode, message: str) -> Decision:
    return Decision(session, refusal=Refusal(code, message))


class Tx:
    """Accumulates one decision: each durable event bumps ``seq`` by one."""

    def __init__(self, session: Session, now: int) -> None:
        self.start = session
        self.s = session
        self.now = now
        self.events: list[Message] = []
        self.charges: list[Charge] = []

    def update(self, **changes: Any) -> None:
        self.s = evolve(self.s, **changes)

    def set_attempt(self, number: int, **changes: Any) -> None:
        attempt = self.s.attempt_by_number(number)
        assert attempt is not None
        self.s = self.s.with_attempt(evolve(attempt, **changes))

    def add_effect(self, kind: str, attempt: int) -> None:
        """Put an effect in the outbox, due at once; one per attempt and kind."""
        if self.s.effect(kind, attempt) is None:
            effect = GatewayEffect(kind, attempt, created_at=self.now, next_at=self.now)
            self.update(effects=self.s.effects + (effect,))

    def void_attempt(self, number: int) -> None:
        """The provider confirmed attempt ``number`` took no money (voided, its hold
        released): a capture still pending for it must never be made. That hold was
        known, so its release is also put in the outbox, confirmed once more in case
        the void was acknowledged and lost (a release done already is answered as done)."""
        self.set_attempt(number, status=A_VOIDED, ended_at=self.ended(number))
        if self.cancel_capture(number):
            self.add_effect(VOID, number)

    def cancel_capture(self, number: int) -> bool:
        """A capture of attempt ``number`` still pending is never made (its hold is to
        be released); True when there was one."""
        capture = self.s.effect(CAPTURE, number)
        if capture is None or not capture.pending:
            return False
        self.set_effect(evolve(capture, status=CANCELLED, next_at=None, done_at=self.now))
        return True

    def ended(self, number: int) -> int:
        """When attempt ``number`` ended: now, unless it had ended already."""
        attempt = self.s.attempt_by_number(number)
        assert attempt is not None
        return attempt.ended_at if attempt.ended_at is not None else self.now

    def set_effect(self, effect: GatewayEffect) -> None:
        self.update(effects=tuple(effect if e.ident == effect.ident else e for e in self.s.effects))

    def _bump(self) -> None:
        """Each durable event takes the next seq; bump before building its data, so
        the session it carries shows that seq."""
        self.s = evolve(self.s, seq=self.s.seq + 1, updated_at=self.now)

    def _append(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append(Message(kind, data, self.s.id, self.s.seq, self.now))

    def state(self, previous: str, cause: str, **extra: Any) -> None:
        self._bump()
        data = {"session": self.s.to_public(), "previous": previous, "cause": cause}
        self._append("state", {**data, **extra})

    def retry_prompt(self, attempt: int, reason: str, outcome_unknown: bool) -> None:
        self._bump()
        self._append(
            "retry_prompt",
            {
                "attempt": attempt,
                "next_attempt": attempt + 1,
                "max_attempts": self.s.max_attempts,
                "reason": reason,
                "retry_at": self.s.retry_at,
                "outcome_unknown": outcome_unknown,
            },
        )

    def done(self, refusal: Refusal | None = None) -> Decision:
        quiet = not self.events and self.s is not self.start
        return Decision(self.s, tuple(self.events), tuple(self.charges), refusal, quiet)
