"""What paylive needs from a payment provider. The sandbox and Stripe implement it;
results that arrive later come back as webhooks.

Every call names the attempt by its idempotency key and, once the provider has named
the payment, by that reference too (``ref``, the attempt's ``provider_ref``): a
provider such as Stripe looks payments up by its own id, the sandbox by key. Calls
made for an outbox effect also carry the effect's own idempotency key, so that a call
repeated after a crash or a lost answer is done once by the provider.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum

from ..core.commands import ProviderResult
from ..core.decision import Charge
from ..engine import RecordClaim
from ..errors import PayliveError


class GatewayError(PayliveError):
    """The provider could not be asked (network, outage)."""


class ChargeReply(Enum):
    ACCEPTED = "accepted"  # the result will come as a webhook
    NETWORK_ERROR = "network_error"  # no answer: the outcome is unknown


# Records the provider's reference on the attempt before the charge is confirmed;
# False when the attempt has ended meanwhile (then the charge must not go on).
Remember = Callable[[str], Awaitable[bool]]


class Gateway(ABC):
    @abstractmethod
    async def charge(self, charge: Charge, remember: Remember) -> ChargeReply | ProviderResult:
        """Ask for a charge under ``charge.key``; a key is charged at most once. A
        provider that answers at once returns its result (say ``authorized`` or
        ``declined``); otherwise the result comes later as a webhook."""

    @abstractmethod
    async def void(self, key: str, ref: str | None, idempotency_key: str | None = None) -> bool:
        """Cancel the charge under ``key`` if it has not happened, or release its hold.
        True when the money had moved already (it cannot be voided), False when nothing
        is or will be charged. Raises GatewayError when the provider cannot be asked.
        ``idempotency_key`` is the outbox effect's, when the void is one."""

    @abstractmethod
    async def refund(
        self, key: str, ref: str | None, idempotency_key: str, amount: int | None = None
    ) -> None:
        """Give back the money charged under ``key`` (``amount`` of it; None: all of it),
        once per ``idempotency_key``. Raises GatewayError unless the provider confirms."""

    def charge_claims(self, charge: Charge) -> Sequence[RecordClaim]:
        """The records of the engine this provider's ``charge`` starts by claiming (the
        sandbox's ledger), which the save of the decision may claim ahead so that the
        charge needs no round trip of its own for them (``SessionStore.save``)."""
        return ()

    async def capture(self, key: str, ref: str | None, idempotency_key: str) -> bool:
        """Take the money a hold keeps, once per ``idempotency_key``: True once it is
        taken (now or before), False when it cannot be (the hold was released or has
        expired). Raises GatewayError when the provider cannot be asked. Only providers
        that report ``authorized`` are asked."""
        raise GatewayError("this provider takes the money at once; there is nothing to capture")

    async def lookup(self, key: str, ref: str | None) -> ProviderResult | None:
        """The provider's word on an attempt now, if it has one worth applying (the page
        finished a step such as 3-D Secure). None: wait for the webhook."""
        return None

    async def close(self) -> None:
        """Release resources."""
