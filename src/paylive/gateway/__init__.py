"""Payment providers: the interface, the built-in sandbox and Stripe."""

from __future__ import annotations

from ..engine import Engine
from ..settings import Settings
from .base import ChargeReply, Gateway, GatewayError, Remember

__all__ = ["ChargeReply", "Gateway", "GatewayError", "Remember", "create_gateway"]


def create_gateway(settings: Settings, engine: Engine) -> Gateway:
    """The provider ``PAYLIVE_GATEWAY`` names."""
    if settings.gateway == "stripe":
        from .stripe import StripeGateway

        return StripeGateway(settings.stripe)
    from .sandbox import SandboxGateway

    return SandboxGateway(settings.sandbox, engine)
