"""Credentials: the merchant's API key, staff tokens and client secrets.

Staff are named and have a role (docs/protocol.md section 6.12): ``viewer`` (the
dashboard and the read API), ``operator`` (also the actions on sessions: refunds,
reviews, send again, done by hand) and ``admin`` (everything, the sandbox switches and
the settings view included). ``PAYLIVE_ADMIN_TOKEN`` is one admin named ``admin``.

A client secret is ``<session id>_secret_<mac>`` where the mac is an HMAC of the
session id under ``PAYLIVE_SECRET``: checking one needs no engine call, so a
reconnect storm costs no reads. Every comparison is constant-time, and every secret
is a list while it is rotated (the first signs, all are accepted): each candidate is
compared, so the time taken does not tell which one matched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.protocol import ErrorCode
from ..errors import Refused
from ..settings import Settings

MERCHANT = "merchant"
CUSTOMER = "customer"
ADMIN = "admin"  # the kind of every staff principal, whatever its role

VIEWER, OPERATOR = "viewer", "operator"
ROLES = (VIEWER, OPERATOR, ADMIN)  # each may do what the ones before it may
ADMIN_TOKEN_NAME = "admin"

_MARK = "_secret_"


@dataclass(frozen=True)
class Principal:
    kind: str
    session_id: str | None = None
    # Staff only: who, and what they may do.
    name: str | None = None
    role: str | None = None

    def at_least(self, role: str) -> bool:
        return self.role is not None and ROLES.index(self.role) >= ROLES.index(role)

    @property
    def who(self) -> str:
        """The name the audit trail records: a staff name, or ``merchant``."""
        return self.name or self.kind

    def may_open(self, session_id: str) -> bool:
        if self.kind == CUSTOMER:
            return self.session_id == session_id
        return self.kind in (MERCHANT, ADMIN)


def _mac(secret: str, session_id: str) -> str:
    digest = hmac.new(secret.encode(), b"client-secret:" + session_id.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:24]).decode().rstrip("=")


def client_secret(secret: str, session_id: str) -> str:
    return f"{session_id}{_MARK}{_mac(secret, session_id)}"


def session_of_client_secret(secrets: str | Sequence[str], token: str) -> str | None:
    """The session a client secret opens (signed under any of ``secrets``), or None."""
    session_id, mark, mac = token.rpartition(_MARK)
    if not mark or not session_id.startswith("ps_") or len(token) > 200:
        return None
    candidates = [secrets] if isinstance(secrets, str) else secrets
    if matches_any(mac, [_mac(secret, session_id) for secret in candidates]):
        return session_id
    return None


def equal(given: str, expected: str) -> bool:
    return bool(expected) and hmac.compare_digest(given.encode(), expected.encode())


def matches_any(given: str, expected: Sequence[str]) -> bool:
    """Whether ``given`` is one of ``expected``: every entry is compared, none skipped."""
    matched = False
    for value in expected:
        matched |= equal(given, value)
    return matched


def principal_for(token: str | None, settings: Settings) -> Principal | None:
    """Who ``token`` (a bearer token) is, or None."""
    if not token:
        return None
    if matches_any(token, settings.api_keys):
        return Principal(MERCHANT)
    staff = staff_of(token, settings)
    if staff is not None:
        return staff
    session_id = session_of_client_secret(settings.signing_secrets, token)
    if session_id is not None:
        return Principal(CUSTOMER, session_id)
    return None


def staff_of(token: str, settings: Settings) -> Principal | None:
    """The staff member ``token`` belongs to; every listed token is compared (in constant
    time each), so how long it takes says nothing about which one matched."""
    found: Principal | None = None
    for name, role, expected in settings.staff_tokens:
        if equal(token, expected) and found is None:
            found = Principal(ADMIN, name=name, role=role)
    if matches_any(token, settings.admin_tokens) and found is None:
        found = Principal(ADMIN, name=ADMIN_TOKEN_NAME, role=ADMIN)
    return found


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
