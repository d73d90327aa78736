"""Credentials: the merchant's API key, staff tokens and client secrets.

Staff are named and have a role (docs/protocol.md section 8.1): ``viewer`` (the
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
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.protocol import ErrorCode
from ..errors import Refused
from ..settings import Credentials

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


def principal_for(token: str | None, credentials: Credentials) -> Principal | None:
    """Who ``token`` (a bearer token) is, or None."""
    if not token:
        return None
    if matches_any(token, credentials.api_keys):
        return Principal(MERCHANT)
    staff = staff_of(token, credentials)
    if staff is not None:
        return staff
    session_id = session_of_client_secret(credentials.signing_secrets, token)
    if session_id is not None:
        return Principal(CUSTOMER, session_id)
    return None


def staff_of(token: str, credentials: Credentials) -> Principal | None:
    """The staff member ``token`` belongs to; every listed token is compared (in constant
    time each), so how long it takes says nothing about which one matched."""
    found: Principal | None = None
    for name, role, expected in credentials.staff_tokens:
        if equal(token, expected) and found is None:
            found = Principal(ADMIN, name=name, role=role)
    if matches_any(token, credentials.admin_tokens) and found is None:
        found = Principal(ADMIN, name=ADMIN_TOKEN_NAME, role=ADMIN)
    return found


def still_listed(principal: Principal, credentials: Credentials) -> bool:
    """Whether a ticket's staff member still holds a token of that role. A ticket
    outlives the token that bought it (it is signed with ``PAYLIVE_SECRET``, which a
    staff list rotated by a restart leaves as it was): a member struck off or moved
    to another role keeps nothing a ticket of theirs still promises."""
    if principal.kind != ADMIN:
        return True
    held = {(name, role) for name, role, _ in credentials.staff_tokens}
    if credentials.admin_tokens:
        held.add((ADMIN_TOKEN_NAME, ADMIN))
    return (principal.name, principal.role) in held


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


# The scope key under which the door leaves the Principal it identified from the
# request's Authorization header.
PRINCIPAL = "paylive.principal"


def identify(header: str | None, credentials: Credentials) -> Principal:
    """Who sends ``header`` (an Authorization header); Refused ``unauthorized`` when
    it names nobody."""
    token = bearer(header)
    if token is None:
        raise Refused(
            ErrorCode.UNAUTHORIZED, "send Authorization: Bearer <api key or client secret>"
        )
    principal = principal_for(token, credentials)
    if principal is None:
        raise Refused(ErrorCode.UNAUTHORIZED, "the credentials are not valid")
    return principal


# Tickets (docs/protocol.md 4.2): a short-lived, single-use credential for opening a
# stream, a long-poll or a socket, where a browser cannot send a header (EventSource,
# WebSocket). Signed, so any worker can read one; its single use is recorded in the
# engine by the caller (``nonce``), so it holds across workers too.
_TICKET = "tk1"


@dataclass(frozen=True)
class Ticket:
    principal: Principal
    nonce: str
    expires_at: int


def _ticket_mac(secret: str, payload: str) -> str:
    digest = hmac.new(secret.encode(), b"ticket:" + payload.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()[:24]).decode().rstrip("=")


def make_ticket(secret: str, principal: Principal, expires_at: int) -> str:
    """A ticket for ``principal`` (staff keep their name and role), signed with ``secret``
    (the first signing secret)."""
    nonce = base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("=")
    fields = {"k": principal.kind, "s": principal.session_id, "x": expires_at, "n": nonce}
    if principal.name is not None:
        fields.update(w=principal.name, r=principal.role)
    body = json.dumps(fields, separators=(",", ":"))
    payload = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
    return f"{_TICKET}.{payload}.{_ticket_mac(secret, payload)}"


def read_ticket(secrets: str | Sequence[str], ticket: str, now: int) -> Ticket | None:
    """The ticket's holder, or None when it is not one of ours (signed under none of
    ``secrets``) or has expired. Whether it was used already is the engine's to say."""
    if len(ticket) > 400:
        return None
    mark, _, rest = ticket.partition(".")
    payload, _, mac = rest.partition(".")
    if mark != _TICKET or not payload or not mac:
        return None
    candidates = [secrets] if isinstance(secrets, str) else secrets
    if not matches_any(mac, [_ticket_mac(secret, payload) for secret in candidates]):
        return None
    try:
        fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        kind, session_id = fields["k"], fields["s"]
        expires_at, nonce = int(fields["x"]), str(fields["n"])
        name, role = fields.get("w"), fields.get("r")
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if kind not in (CUSTOMER, ADMIN) or expires_at < now:
        return None
    if kind == ADMIN and (not isinstance(name, str) or role not in ROLES):
        return None
    return Ticket(Principal(kind, session_id, name, role), nonce, expires_at)
