"""What paylive needs from a payment provider. A real adapter implements this beside
the sandbox; results that arrive later come back as webhooks."""

from __future__ import annotations

from abc import ABC, abstractmethod
from enum import Enum

from ..core.machine import Charge


class GatewayError(Exception):
    """The provider could not be asked (network, outage)."""


class ChargeReply(Enum):
    ACCEPTED = "accepted"  # the result will come as a webhook
    NETWORK_ERROR = "network_error"  # no answer: the outcome is unknown


class Gateway(ABC):
    @abstractmethod
    async def charge(self, charge: Charge) -> ChargeReply:
        """Ask for a charge under ``charge.key``; a key is charged at most once."""

    @abstractmethod
    async def void(self, key: str) -> bool:
        """Cancel the charge under ``key`` if it has not happened. True when the money
        had moved already (it cannot be voided), False when nothing is or will be
        charged. Raises GatewayError when the provider cannot be asked."""

    @abstractmethod
    async def refund(self, key: str) -> None:
        """Give back the money charged under ``key``."""

    async def close(self) -> None:
        """Release resources."""
