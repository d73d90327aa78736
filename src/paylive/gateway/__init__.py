"""Payment providers: the interface and the built-in sandbox."""

from .base import ChargeReply, Gateway, GatewayError

__all__ = ["ChargeReply", "Gateway", "GatewayError"]
