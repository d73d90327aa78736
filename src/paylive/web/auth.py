"""Credentials: the merchant's API key, the admin token and client secrets.

A client secret is ``<session id>_secret_<mac>`` where the mac is an HMAC of the
session id under ``PAYLIVE_SECRET``: checking one needs no engine call, so a
reconnect storm costs no reads. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

from ..core.protocol import ErrorCode
from ..errors import Refused
from ..settings import Settings

MERCHANT = "merchant"
CUSTOMER = "customer"
ADMIN = "admin"

_MARK = "_secret_"


@dataclass(frozen=True)
class Principal:
    kind: str
    session_id: str | None = None

    def may_open(self, session_id: str) -> bool:
        if self.kind == CUSTOMER:
            return self.session_id == session_id
        return self.kind in (MERCHANT, ADMIN)


def _mac(secret: str, session_id: str) -> str:
    digest = hmac.new(secret.encode(), b"client-secret:" + session_id.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:24]).decode().rstrip("=")


def client_secret(secret: str, session_id: str) -> str:
    return f"{session_id}{_MARK}{_mac(secret, session_id)}"


def session_of_client_secret(secret: str, token: str) -> str | None:
    """The session a client secret opens, or None when it is not one of ours."""
    session_id, mark, mac = token.rpartition(_MARK)
    if not mark or not session_id.startswith("ps_") or len(token) > 200:
        return None
    if hmac.compare_digest(mac.encode(), _mac(secret, session_id).encode()):
        return session_id
    return None


def equal(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def principal_for(token: str | None, settings: Settings) -> Principal | None:
    """Who ``token`` (a bearer token) is, or None."""
    if not token:
        return None
    if equal(token, settings.api_key):
        return Principal(MERCHANT)
    if equal(token, settings.admin_token):
        return Principal(ADMIN)
    session_id = session_of_client_secret(settings.secret, token)
    if session_id is not None:
        return Principal(CUSTOMER, session_id)
    return None


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def identify(header: str | None, settings: Settings) -> Principal:
    """Who sends ``header`` (an Authorization header); Refused ``unauthorized`` when
    it names nobody."""
    token = bearer(header)
    if token is None:
        raise Refused(
            ErrorCode.UNAUTHORIZED, "send Authorization: Bearer <api key or client secret>"
        )
    principal = principal_for(token, settings)
    if principal is None:
        raise Refused(ErrorCode.UNAUTHORIZED, "the credentials are not valid")
    return principal
