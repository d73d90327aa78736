"""What can happen to a session, as commands for ``machine.decide``. Values only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .outbox import DeliveryOutcome, EffectOutcome, ResolveReview, SendAgain
from .refunds import MarkDone, Refund


@dataclass(frozen=True)
class StartAttempt:
    """Pay (first attempt) or retry; ``payment_method`` None reuses the last one.
    ``request`` names the request (a digest of its Idempotency-Key and body), when it
    has a key: the attempt it starts remembers it."""

    payment_method: dict[str, Any] | None = None
    request: str | None = None


@dataclass(frozen=True)
class Interrupt:
    """The client lost the attempt (say, its network went away). ``request`` names a
    keyed request (as ``StartAttempt``'s does): the session remembers it."""

    reason: str = "network_error"
    request: str | None = None


@dataclass(frozen=True)
class Cancel:
    """``request``: as ``Interrupt``'s."""

    request: str | None = None


@dataclass(frozen=True)
class ProviderResult:
    """A provider's word on attempt ``attempt``: from a webhook, the merchant, or the
    gateway's own reply (``network_error`` when it could not be reached).

    ``succeeded``: the money moved (with a provider that authorizes first: captured).
    ``authorized``: the money is held, not yet taken (captured next, or released).
    ``requires_action``: the customer must act first (``action`` says what the page needs).
    """

    attempt: int
    # succeeded | authorized | requires_action | declined | provider_error | network_error
    outcome: str
    decline_code: str | None = None
    provider_ref: str | None = None
    action: dict[str, Any] | None = None
    # The shop's keyed ``complete`` (as ``Interrupt``'s); a provider's word has none.
    request: str | None = None


@dataclass(frozen=True)
class Reference:
    """The provider named attempt ``attempt``'s payment before it is confirmed, so that
    an outcome lost later can be looked up by it. Refused once the attempt has ended
    (the gateway must then not confirm it) or when it already names another payment."""

    attempt: int
    provider_ref: str


@dataclass(frozen=True)
class SeeOutcome:
    """A checkout drew the session's outcome (``status``: succeeded, failed, cancelled
    or expired) and says so: the receipt of core/receipt.py. ``request``: as
    ``Interrupt``'s."""

    status: str
    request: str | None = None


@dataclass(frozen=True)
class Tick:
    """The timer loop looks at the session: deadline or expiry may have passed."""


Command = (
    StartAttempt
    | Interrupt
    | Cancel
    | ProviderResult
    | Reference
    | Tick
    | SeeOutcome
    | EffectOutcome
    | ResolveReview
    | DeliveryOutcome
    | SendAgain
    | Refund
    | MarkDone
)
