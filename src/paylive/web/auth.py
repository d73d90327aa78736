"""Credentials: the merchant's API key, the admin token and client secrets.

A client secret is ``<session id>_secret_<mac>`` where the mac is an HMAC of the
session id under ``PAYLIVE_SECRET``: checking one needs no engine call, so a
reconnect storm costs no reads. Every comparison is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

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


# Tickets (docs/protocol.md 6.9): a short-lived, single-use credential for opening a
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
    nonce = base64.urlsafe_b64encode(os.urandom(12)).decode().rstrip("=")
    body = json.dumps(
        {"k": principal.kind, "s": principal.session_id, "x": expires_at, "n": nonce},
        separators=(",", ":"),
    )
    payload = base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")
    return f"{_TICKET}.{payload}.{_ticket_mac(secret, payload)}"


def read_ticket(secret: str, ticket: str, now: int) -> Ticket | None:
    """The ticket's holder, or None when it is not one of ours or has expired. Whether
    it was used already is the engine's to say."""
    if len(ticket) > 400:
        return None
    mark, _, rest = ticket.partition(".")
    payload, _, mac = rest.partition(".")
    if mark != _TICKET or not payload or not mac:
        return None
    if not hmac.compare_digest(mac.encode(), _ticket_mac(secret, payload).encode()):
        return None
    try:
        fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        kind, session_id = fields["k"], fields["s"]
        expires_at, nonce = int(fields["x"]), str(fields["n"])
    except (ValueError, KeyError, TypeError):
        return None
    if kind not in (CUSTOMER, ADMIN) or expires_at < now:
        return None
    return Ticket(Principal(kind, session_id), nonce, expires_at)
