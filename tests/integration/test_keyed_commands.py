"""``Idempotency-Key`` on every state-changing POST (docs/protocol.md section 3.1), not
only on create, attempts and refunds: a command sent again with its key after a lost
answer gets the kept answer and is never decided twice; another body under the key is
refused; without a key each request is decided as before."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from ..support.client import admin, create, merchant

pytestmark = pytest.mark.anyio

# The sandbox posts nowhere: the attempts these tests start wait for their result.
SERVER_ENV = {"PAYLIVE_SANDBOX_WEBHOOK_URL": "http://127.0.0.1:9/nowhere"}

NEVER = "4000000000000408"  # the sandbox never answers this card


def customer(session: dict[str, Any], key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {session['client_secret']}"}
    return headers if key is None else {**headers, "Idempotency-Key": key}


def code(reply: httpx.Response) -> tuple[int, str]:
    return reply.status_code, str(reply.json()["error"]["code"])


async def changes(http: httpx.AsyncClient, session_id: str) -> list[str]:
    """The statuses the session's durable state events took it to, oldest first."""
    reply = await http.get(f"/api/admin/sessions/{session_id}/events", headers=admin())
    assert reply.status_code == 200, reply.text
    events = reply.json()["events"]
    return [str(e["data"]["session"]["status"]) for e in events if e["type"] == "state"]


async def test_a_keyed_cancel_sent_again_gets_its_kept_answer_and_cancels_once(
    http: httpx.AsyncClient,
) -> None:
    session = await create(http)
    path = f"/api/sessions/{session['id']}/cancel"
    first = await http.post(path, json={}, headers=customer(session, "cancel-1"))
    again = await http.post(path, json={}, headers=customer(session, "cancel-1"))
    assert (first.status_code, again.status_code) == (200, 200), again.text
    assert again.json() == first.json() and first.json()["status"] == "cancelled"
    assert await changes(http, session["id"]) == ["cancelled"]
    other = await http.post(path, json={"why": "x"}, headers=customer(session, "cancel-1"))
    assert code(other) == (422, "idempotency_key_reused")
    # Keyless, as before: decided anew, and the session is over.
    bare = await http.post(path, json={}, headers=customer(session))
    assert code(bare) == (409, "invalid_state")


async def test_a_key_reads_the_answer_of_its_own_session_only(http: httpx.AsyncClient) -> None:
    one, two = await create(http), await create(http)
    made = await http.post(
        f"/api/sessions/{one['id']}/cancel", json={}, headers=customer(one, "shared")
    )
    assert made.status_code == 200
    theirs = await http.post(
        f"/api/sessions/{two['id']}/cancel", json={}, headers=customer(two, "shared")
    )
    assert theirs.status_code == 200 and theirs.json()["id"] == two["id"]


async def test_keyed_interrupt_check_and_seen_answer_again_what_they_did(
    http: httpx.AsyncClient,
) -> None:
    session = await create(http)
    sid = session["id"]
    pay = {"payment_method": {"card": NEVER}}
    started = await http.post(f"/api/sessions/{sid}/attempts", json=pay, headers=customer(session))
    assert started.status_code == 202, started.text
    path = f"/api/sessions/{sid}/interrupt"
    body = {"reason": "network_error"}
    first = await http.post(path, json=body, headers=customer(session, "int-1"))
    again = await http.post(path, json=body, headers=customer(session, "int-1"))
    assert first.status_code == again.status_code and again.json() == first.json(), again.text
    checked = await http.post(f"/api/sessions/{sid}/check", headers=customer(session, "chk-1"))
    twice = await http.post(f"/api/sessions/{sid}/check", headers=customer(session, "chk-1"))
    assert checked.status_code == 200 and twice.json() == checked.json()
    other = await http.post(
        f"/api/sessions/{sid}/check", json={"x": 1}, headers=customer(session, "chk-1")
    )
    assert code(other) == (422, "idempotency_key_reused")
    cancelled = await http.post(f"/api/sessions/{sid}/cancel", json={}, headers=customer(session))
    assert cancelled.status_code == 200, cancelled.text
    seen = {"status": "cancelled"}
    first = await http.post(f"/api/sessions/{sid}/seen", json=seen, headers=customer(session, "s"))
    again = await http.post(f"/api/sessions/{sid}/seen", json=seen, headers=customer(session, "s"))
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()


async def test_a_keyed_complete_of_the_shop_is_decided_once(http: httpx.AsyncClient) -> None:
    session = await create(http)
    sid = session["id"]
    pay = {"payment_method": {"card": NEVER}}
    started = await http.post(f"/api/sessions/{sid}/attempts", json=pay, headers=merchant())
    assert started.status_code == 202, started.text
    path = f"/api/sessions/{sid}/complete"
    body = {"attempt": 1, "outcome": "succeeded"}
    keyed = {**merchant(), "Idempotency-Key": "complete-1"}
    first = await http.post(path, json=body, headers=keyed)
    again = await http.post(path, json=body, headers=keyed)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json() and first.json()["status"] == "succeeded"
    other = await http.post(path, json={**body, "outcome": "declined"}, headers=keyed)
    assert code(other) == (422, "idempotency_key_reused")
    assert await changes(http, sid) == ["processing", "succeeded"]


async def test_a_keyed_staff_action_is_made_and_audited_once(http: httpx.AsyncClient) -> None:
    path = "/api/admin/sandbox/outage"
    keyed = {**admin(), "Idempotency-Key": "outage-1"}
    try:
        first = await http.post(path, json={"seconds": 0}, headers=keyed)
        again = await http.post(path, json={"seconds": 0}, headers=keyed)
        assert first.status_code == again.status_code == 200, again.text
        assert again.json() == first.json()
        other = await http.post(path, json={"seconds": 1}, headers=keyed)
        assert code(other) == (422, "idempotency_key_reused")
    finally:
        await http.post(path, json={"seconds": 0}, headers=admin())
    trail = await http.get("/api/admin/audit?staff=admin", headers=admin())
    actions = [e["action"] for e in trail.json()["entries"]]
    assert actions.count("sandbox_outage") == 2, "the keyed one once, the keyless one once"
