"""What paylive needs from a payment provider. A real adapter implements this beside
the sandbox; results that arrive later come back as webhooks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum

from ..core.decision import Charge
from ..errors import PayliveError


class GatewayError(PayliveError):
    """The provider could not be asked (network, outage)."""


class ChargeReply(Enum):
    ACCEPTED = "accepted"  # the result will come as a webhook
    NETWORK_ERROR = "network_error"  # no answer: the outcome is unknown


class Gateway(ABC):
    @abstractmethod
    async def charge(self, charge: Charge) -> ChargeReply:
        """Ask for a charge under ``charge.key``; a key is charged at most once."""

    @abstractmethod
    async def void(self, key: str, idempotency_key: str | None = None) -> bool:
        """Cancel the charge under ``key`` if it has not happened, or release its
        authorization. True when the money had moved already (it cannot be voided),
        False when nothing is or will be charged. Raises GatewayError when the provider
        cannot be asked. ``idempotency_key`` is the outbox effect's, when it is one."""

    @abstractmethod
    async def refund(self, key: str, idempotency_key: str) -> None:
        """Give back the money charged under ``key``, once per ``idempotency_key``.
        Raises GatewayError unless the provider confirms."""

    async def capture(self, key: str, idempotency_key: str) -> None:
        """Move the money authorized under ``key`` (providers that authorize first),
        once per ``idempotency_key``. Raises GatewayError unless the provider confirms."""
        raise GatewayError("this provider charges at once: there is nothing to capture")

    async def close(self) -> None:
        """Release resources."""
