"""Random lives of a session against a model of a provider that authorizes first
(Stripe's manual capture): holds, captures, releases, 3-D Secure, lost voids, lost
capture answers, and events at least once in any order. Whatever happens, the money
kept is exactly one payment when the session succeeded and none otherwise. Pure and
seeded, like tests/unit/test_money.py."""

from __future__ import annotations

import random
from collections import deque

import pytest

from paylive.core.machine import (
    Cancel,
    Capture,
    Charge,
    Command,
    Decision,
    Interrupt,
    NeedsVoid,
    ProviderResult,
    Refund,
    Rules,
    StartAttempt,
    Tick,
    Void,
    decide,
    new_session,
)
from paylive.core.session import Session, attempt_of

RULES = Rules(attempt_timeout_ms=1000, max_attempts=3, retry_delay_ms=100, session_ttl_ms=20_000)
METHOD = {"stripe": "pm_1"}


class Intents:
    """What the provider knows of each attempt's payment: pending (being confirmed),
    action (3-D Secure), held, declined, captured, cancelled or refunded."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.state: dict[str, str] = {}
        self.events: list[ProviderResult] = []  # webhooks not delivered yet

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

    def capture(self, key: str) -> bool | None:
        """True once captured, False when the hold is gone; None: the answer was lost."""
        if self.state.get(key) == "held":
            self.state[key] = "captured"
            self._announce(key, "succeeded")
        taken = self.state.get(key) in ("captured", "refunded")
        return None if self.rng.random() < 0.1 else taken

    def void(self, key: str) -> bool:
        if self.state.get(key) in ("action", "held") and self.rng.random() >= 0.1:
            self.state[key] = "cancelled"  # else the cancel is lost on the way
        return self.state.get(key) in ("captured", "refunded")

    def refund(self, key: str) -> None:
        assert self.state[key] == "captured", f"refund of {key} that is {self.state[key]}"
        self.state[key] = "refunded"

    def kept(self) -> int:
        return sum(1 for state in self.state.values() if state == "captured")


def run(session: Session, command: Command, now: int, stripe: Intents) -> Session:
    """The service without I/O: voids when asked, effects, and the answers they bring."""
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
        session = result.session
        for effect in result.effects:
            if isinstance(effect, Charge):
                answer = stripe.confirm(effect.key)
                todo.append(answer or ProviderResult(effect.attempt, "network_error"))
            elif isinstance(effect, Capture):
                taken = stripe.capture(effect.key)
                if taken is not None:
                    outcome = "succeeded" if taken else "provider_error"
                    todo.append(ProviderResult(effect.attempt, outcome))
            elif isinstance(effect, Void):
                if stripe.void(effect.key):
                    todo.append(ProviderResult(effect.attempt, "succeeded"))
            elif isinstance(effect, Refund):
                stripe.refund(effect.key)
        assert len([a for a in session.attempts if a.status == "succeeded"]) <= 1
    return session


@pytest.mark.parametrize("seed", range(600))
def test_money_moves_once_with_holds_and_captures(seed: int) -> None:
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
    # The world settles: Stripe resends every event until it is answered, time passes.
    for key, state in list(stripe.state.items()):
        if state == "held":
            stripe._announce(key, "authorized")
            stripe.events.append(ProviderResult(attempt_of(key)[1], "authorized"))
        elif state == "captured":
            stripe.events.append(ProviderResult(attempt_of(key)[1], "succeeded"))
    rng.shuffle(stripe.events)
    while stripe.events:
        s = run(s, stripe.events.pop(), now, stripe)
    for _ in range(6):
        now += 25_000
        s = run(s, Tick(), now, stripe)
    assert s.terminal, s.status
    assert stripe.kept() == (1 if s.status == "succeeded" else 0), (s.status, stripe.state)
    refunded = [a for a in s.attempts if a.status == "refunded"]
    assert s.needs_review == bool(refunded)
