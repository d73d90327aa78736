"""Random lives of a session against a model of Stripe's PaymentIntents (manual
capture): answers at once from the confirmation, holds captured or released through
the outbox, 3-D Secure, lost cancels, lost answers to captures and releases, and events
at least once in any order. Whatever happens, the money kept is exactly one payment
when the session succeeded and none otherwise, no hold is left hanging, and every
effect is done once. Pure and seeded, like tests/unit/test_money.py."""

from __future__ import annotations

import random
from collections import deque

import pytest

from paylive.core.effects import CAPTURE, REFUND
from paylive.core.machine import (
    Cancel,
    Command,
    Decision,
    EffectOutcome,
    Interrupt,
    NeedsVoid,
    ProviderResult,
    Rules,
    StartAttempt,
    Tick,
    decide,
    new_session,
)
from paylive.core.session import Session, attempt_of

from ..support.seeds import blocks, check_seeds

RULES = Rules(
    attempt_timeout_ms=1000,
    max_attempts=3,
    retry_delay_ms=100,
    session_ttl_ms=20_000,
    effect_retry_base_ms=100,
    effect_retry_cap_ms=2_000,
    # Never overdue here (test_money.py covers reviews): staff hear of refunds only.
    effect_review_after_ms=10**9,
)
METHOD = {"stripe": "pm_1"}


class Intents:
    """What the provider knows of each attempt's payment: action (3-D Secure), held,
    declined, captured, cancelled or refunded. Calls with an idempotency key are done
    once per key, and a repeat is answered as the first was (Stripe replays)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.state: dict[str, str] = {}
        self.events: list[ProviderResult] = []  # webhooks not delivered yet
        self.answered: dict[str, bool] = {}  # effect key -> its first answer

    def _announce(self, key: str, outcome: str, decline_code: str | None = None) -> None:
        result = ProviderResult(attempt_of(key)[1], outcome, decline_code, f"pi_{key}")
        for _ in range(self.rng.choice((0, 1, 1, 2))):  # Stripe's events: lost, once, twice
            self.events.append(result)

    def confirm(self, key: str) -> ProviderResult | None:
        """The charge's own answer (None: lost, the outcome is unknown)."""
        assert key not in self.state, f"two charges under {key}"
        roll = self.rng.random()
        if roll < 0.2:
            self.state[key] = "action"
            answer = ProviderResult(attempt_of(key)[1], "requires_action", None, f"pi_{key}", {})
        elif roll < 0.4:
            self.state[key] = "declined"
            self._announce(key, "declined", "card_declined")
            answer = ProviderResult(attempt_of(key)[1], "declined", "card_declined", f"pi_{key}")
        else:
            self.state[key] = "held"
            self._announce(key, "authorized")
            answer = ProviderResult(attempt_of(key)[1], "authorized", provider_ref=f"pi_{key}")
        return None if self.rng.random() < 0.15 else answer

    def authenticate(self, key: str) -> None:
        """The customer finishes (or fails) 3-D Secure in the page."""
        if self.rng.random() < 0.7:
            self.state[key] = "held"
            self._announce(key, "authorized")
        else:
            self.state[key] = "declined"
            self._announce(key, "declined", "authentication_failed")

    def void(self, key: str) -> bool:
        """The cancel a decision waits for; True when the money was taken."""
        if self.state.get(key) in ("action", "held") and self.rng.random() >= 0.1:
            self.state[key] = "cancelled"  # else the cancel is lost on the way
        return self.state.get(key) in ("captured", "refunded")

    def effect(self, kind: str, key: str, idempotency_key: str) -> bool | None:
        """An outbox effect: True when the money was taken; None when the answer was
        lost on its way back (the call may have been made)."""
        if idempotency_key not in self.answered:
            state = self.state.get(key)
            if kind == CAPTURE:
                # A hold released by a void has its capture cancelled: never asked.
                assert state in ("held", "captured"), f"capture of {key} that is {state}"
                if state == "held":
                    self.state[key] = "captured"
                    self._announce(key, "succeeded")
            elif kind == REFUND:
                assert state == "captured", f"refund of {key} that is {state}"
                self.state[key] = "refunded"
            elif state in ("action", "held"):
                self.state[key] = "cancelled"
            self.answered[idempotency_key] = self.state[key] in ("captured", "refunded")
        return None if self.rng.random() < 0.1 else self.answered[idempotency_key]

    def kept(self) -> int:
        return sum(1 for state in self.state.values() if state == "captured")


def run(session: Session, command: Command, now: int, stripe: Intents) -> Session:
    """The service without I/O: voids when asked, the charge, the answers it brings."""
    todo: deque[Command] = deque([command])
    while todo:
        voids: dict[int, bool] = {}
        current = todo.popleft()
        while True:
            result = decide(session, current, now, RULES, voids)
            if not isinstance(result, NeedsVoid):
                break
            for number in result.attempts:
                voids[number] = stripe.void(f"{session.id}:{number}")
        assert isinstance(result, Decision)
        kept = [(e.kind, e.attempt) for e in result.session.effects[: len(session.effects)]]
        assert kept == [(e.kind, e.attempt) for e in session.effects], "an effect was dropped"
        session = result.session
        for charge in result.charges:
            answer = stripe.confirm(charge.key)
            todo.append(answer or ProviderResult(charge.attempt, "network_error"))
        assert len([a for a in session.attempts if a.status == "succeeded"]) <= 1
    return session


def work_outbox(s: Session, now: int, stripe: Intents, rng: random.Random) -> Session:
    """The effect loop: each due effect tried with its own key, its answer recorded."""
    for kind, number in [(e.kind, e.attempt) for e in s.pending_effects]:
        effect = s.effect(kind, number)
        if effect is None or not effect.pending or effect.next_at is None or effect.next_at > now:
            continue
        answer = stripe.effect(kind, f"{s.id}:{number}", effect.key(s.id))
        if answer is None:
            outcome = EffectOutcome(kind, number, False, "no answer", jitter=rng.random())
        else:
            outcome = EffectOutcome(kind, number, True, charged=answer)
        s = run(s, outcome, now, stripe)
    return s


# 600 lives, 50 a test (tests/support/seeds.py).
@pytest.mark.parametrize("seeds", blocks(600), ids=lambda r: f"{r.start}-{r.stop - 1}")
def test_money_moves_once_with_holds_and_captures(seeds: range) -> None:
    check_seeds(seeds, money_moves_once_with_holds_and_captures)


def money_moves_once_with_holds_and_captures(seed: int) -> None:
    rng = random.Random(seed)
    stripe = Intents(rng)
    now = 0
    s = new_session(f"ps_{seed}", "o", 100, "EUR", {}, now, RULES)
    for _ in range(rng.randint(5, 40)):
        action = rng.random()
        now += rng.choice((0, 50, 200, 700, 1200))
        if action < 0.3:
            s = run(s, StartAttempt(METHOD), now, stripe)
        elif action < 0.38:
            s = run(s, Cancel(), now, stripe)
        elif action < 0.45:
            s = run(s, Interrupt(), now, stripe)
        elif action < 0.6:
            waiting = [k for k, v in stripe.state.items() if v == "action"]
            if waiting:
                stripe.authenticate(rng.choice(waiting))
        elif action < 0.85 and stripe.events:
            s = run(s, stripe.events.pop(rng.randrange(len(stripe.events))), now, stripe)
        else:
            s = run(s, Tick(), now, stripe)
        if rng.random() < 0.5:
            s = work_outbox(s, now, stripe, rng)
    # The world settles: Stripe resends every event until it is answered, time passes,
    # and the effect loop keeps trying.
    for key, state in list(stripe.state.items()):
        if state == "held":
            stripe.events.append(ProviderResult(attempt_of(key)[1], "authorized"))
        elif state == "captured":
            stripe.events.append(ProviderResult(attempt_of(key)[1], "succeeded"))
    rng.shuffle(stripe.events)
    while stripe.events:
        s = run(s, stripe.events.pop(), now, stripe)
    for _ in range(6):
        now += 25_000
        s = run(s, Tick(), now, stripe)
    for _ in range(100):
        if not s.pending_effects:
            break
        now += RULES.effect_retry_cap_ms
        s = work_outbox(s, now, stripe, rng)
    assert s.terminal, s.status
    assert not s.pending_effects, "every effect done"
    assert stripe.kept() == (1 if s.status == "succeeded" else 0), (s.status, stripe.state)
    assert "held" not in stripe.state.values(), "no hold left hanging"
    refunded = [a for a in s.attempts if a.status == "refunded"]
    assert s.needs_review == bool(refunded)
    done = {e.key(s.id) for e in s.effects if e.status == "done"}
    cancelled = {e.key(s.id) for e in s.effects if e.status == "cancelled"}
    assert done | cancelled == {e.key(s.id) for e in s.effects}
    assert done == set(stripe.answered), "each effect made once, a cancelled one never"
