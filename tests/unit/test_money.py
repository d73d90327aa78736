"""Random lives of a session against a model provider: whatever the order of clicks,
timeouts, lost answers, duplicate and late webhooks, money moves at most once and no
outcome is lost. Pure: the machine and a ledger, no I/O, seeded so a failure replays."""

from __future__ import annotations

import random

import pytest

from paylive.core.machine import (
    Cancel,
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
    decide,
    new_session,
)
from paylive.core.session import Session

RULES = Rules(attempt_timeout_ms=1000, max_attempts=3, retry_delay_ms=100, session_ttl_ms=20_000)
CARD = {"card": "4242424242424242"}


class Provider:
    """What the provider knows: each key is pending, charged, declined, voided or refunded."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ledger: dict[str, str] = {}
        self.outbox: list[ProviderResult] = []  # webhooks not delivered yet

    def charge(self, key: str) -> None:
        assert key not in self.ledger, f"two charges under {key}"
        self.ledger[key] = "pending"

    def settle(self, key: str) -> None:
        """The provider decides a pending charge; its webhook comes at least once
        (docs/protocol.md), perhaps twice, in any order with the others."""
        charged = self.rng.random() < 0.6
        self.ledger[key] = "charged" if charged else "declined"
        number = int(key.rpartition(":")[2])
        result = ProviderResult(
            number, "succeeded" if charged else "declined", None if charged else "card_declined"
        )
        for _ in range(self.rng.choice((1, 1, 2))):
            self.outbox.append(result)

    def void(self, key: str) -> bool:
        if self.ledger.get(key) == "pending":
            # Sometimes the void is lost on the way and the charge goes through after
            # all: the case the refund rules exist for.
            if self.rng.random() < 0.15:
                return False
            self.ledger[key] = "voided"
        return self.ledger.get(key) in ("charged", "refunded")

    def refund(self, key: str) -> None:
        assert self.ledger[key] == "charged", f"refund of {key} that was {self.ledger[key]}"
        self.ledger[key] = "refunded"

    def kept(self) -> int:
        return sum(1 for state in self.ledger.values() if state == "charged")


def run(session: Session, command: Command, now: int, provider: Provider) -> Session:
    """The service's loop without I/O: void when asked, then apply the effects."""
    voids: dict[int, bool] = {}
    while True:
        result = decide(session, command, now, RULES, voids)
        if isinstance(result, NeedsVoid):
            for number in result.attempts:
                voids[number] = provider.void(f"{session.id}:{number}")
            continue
        assert isinstance(result, Decision)
        for effect in result.effects:
            if isinstance(effect, Charge):
                provider.charge(effect.key)
            elif isinstance(effect, Refund):
                provider.refund(effect.key)
        # A lost void can let the provider charge twice for a moment; the server must
        # never think two attempts succeeded, and must give one back when it hears.
        assert len([a for a in result.session.attempts if a.status == "succeeded"]) <= 1
        return result.session


@pytest.mark.parametrize("seed", range(2000))
def test_money_moves_at_most_once(seed: int) -> None:
    rng = random.Random(seed)
    provider = Provider(rng)
    now = 0
    s = new_session(f"ps_{seed}", "o", 100, "EUR", {}, now, RULES)
    for _ in range(rng.randint(5, 40)):
        action = rng.random()
        now += rng.choice((0, 50, 200, 700, 1200))
        if action < 0.3:
            s = run(s, StartAttempt(CARD if rng.random() < 0.7 else None), now, provider)
        elif action < 0.4:
            s = run(s, Cancel(), now, provider)
        elif action < 0.5:
            s = run(s, Interrupt(), now, provider)
        elif action < 0.7:
            pending = [k for k, v in provider.ledger.items() if v == "pending"]
            if pending:
                provider.settle(rng.choice(pending))
        elif action < 0.9 and provider.outbox:
            s = run(s, provider.outbox.pop(rng.randrange(len(provider.outbox))), now, provider)
        else:
            s = run(s, Tick(), now, provider)
    # Then the world settles: every charge decided, every webhook delivered, time passes.
    for key, state in list(provider.ledger.items()):
        if state == "pending":
            provider.settle(key)
    rng.shuffle(provider.outbox)
    for result in provider.outbox:
        s = run(s, result, now, provider)
    for _ in range(6):
        now += 25_000
        s = run(s, Tick(), now, provider)
    assert s.terminal, s.status
    # No outcome lost: the session is paid exactly when the provider kept the money.
    assert provider.kept() == (1 if s.status == "succeeded" else 0), (s.status, provider.ledger)
    refunded = [a for a in s.attempts if a.status == "refunded"]
    assert s.needs_review == bool(refunded)
