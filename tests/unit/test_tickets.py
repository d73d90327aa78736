"""Tickets (docs/protocol.md 4.2): what a ticket says and who can forge one. Pure: the
single use is the engine's, tested against real processes in tests/integration."""

from __future__ import annotations

import base64
import json

from paylive.web.auth import (
    ADMIN,
    CUSTOMER,
    MERCHANT,
    VIEWER,
    Principal,
    make_ticket,
    read_ticket,
)

SECRET = "a-signing-secret-0123456789"
NOW = 1_800_000_000_000
STAFF = Principal(ADMIN, name="admin", role=ADMIN)


def test_a_ticket_carries_its_holder_until_it_expires() -> None:
    ticket = make_ticket(SECRET, Principal(CUSTOMER, "ps_1"), NOW + 30_000)
    read = read_ticket(SECRET, ticket, NOW)
    assert read is not None
    assert read.principal == Principal(CUSTOMER, "ps_1") and read.expires_at == NOW + 30_000
    assert read_ticket(SECRET, ticket, NOW + 30_000) is not None
    assert read_ticket(SECRET, ticket, NOW + 30_001) is None
    admin = read_ticket(SECRET, make_ticket(SECRET, STAFF, NOW + 1), NOW)
    assert admin is not None and admin.principal == STAFF and admin.principal.may_open("ps_any")
    # A staff member keeps their name and role: a viewer's ticket opens as a viewer.
    viewer = Principal(ADMIN, name="vera", role=VIEWER)
    read = read_ticket(SECRET, make_ticket(SECRET, viewer, NOW + 1), NOW)
    assert read is not None and read.principal == viewer
    # Signed under an older signing secret still listed (rotation): still good.
    old = make_ticket("the-old-secret-0123456789", STAFF, NOW + 1)
    assert read_ticket(("a-new-secret-0123456789", "the-old-secret-0123456789"), old, NOW)


def test_each_ticket_has_its_own_nonce() -> None:
    nonces = {
        read_ticket(SECRET, make_ticket(SECRET, STAFF, NOW + 1), NOW).nonce  # type: ignore[union-attr]
        for _ in range(50)
    }
    assert len(nonces) == 50


def test_a_changed_or_foreign_ticket_is_nobody() -> None:
    ticket = make_ticket(SECRET, Principal(CUSTOMER, "ps_1"), NOW + 30_000)
    mark, payload, mac = ticket.split(".")
    body = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    body["s"] = "ps_2"  # another session, the same mac
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")
    assert read_ticket(SECRET, f"{mark}.{forged}.{mac}", NOW) is None
    assert read_ticket("another-secret-0123456789", ticket, NOW) is None
    for junk in ("", "tk1", "tk1..", "tk2." + payload + "." + mac, ticket + "x", "x" * 500):
        assert read_ticket(SECRET, junk, NOW) is None
    # The merchant's key buys no ticket; one that says so anyway is refused.
    merchant = make_ticket(SECRET, Principal(MERCHANT), NOW + 1)
    assert read_ticket(SECRET, merchant, NOW) is None
