"""The HTTP API against a real server (docs/protocol.md section 3)."""

from __future__ import annotations

import json
import time
from typing import Any

import anyio
import httpx
import pytest

from paylive.core.signature import signature_header

from ..support import tls
from ..support.client import admin, create, merchant
from ..support.servers import WEBHOOK_SECRET, Server
from ..support.waiting import until

pytestmark = pytest.mark.anyio

# The sandbox posts nowhere useful: these tests send the webhooks themselves.
SERVER_ENV = {"PAYLIVE_SANDBOX_WEBHOOK_URL": "http://127.0.0.1:9/nowhere"}

OK = "4242424242424242"
NEVER = "4000000000000408"


def customer(session: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['client_secret']}"}


def error_code(reply: httpx.Response) -> str:
    return str(reply.json()["error"]["code"])


async def snapshot(http: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    reply = await http.get(f"/api/sessions/{session_id}", headers=merchant())
    assert reply.status_code == 200
    return reply.json()


def signed(
    body: dict[str, Any], secret: str = WEBHOOK_SECRET, at: int | None = None
) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    header = signature_header(secret, int(time.time()) if at is None else at, raw)
    return raw, {"Paylive-Signature": header, "Content-Type": "application/json"}


async def processing(http: httpx.AsyncClient) -> tuple[dict[str, Any], str]:
    """A session whose first attempt waits for a provider result (card ...0408 never
    answers, and this module's sandbox posts nowhere): the tests send the webhooks."""
    session = await create(http)
    reply = await http.post(
        f"/api/sessions/{session['id']}/attempts",
        json={"payment_method": {"card": NEVER}},
        headers=customer(session),
    )
    assert reply.status_code == 202
    return session, session["id"]


def webhook(
    session_id: str,
    attempt: int,
    kind: str = "payment.succeeded",
    failure: str | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_{session_id}_{attempt}_{kind}",
        "type": kind,
        "session": session_id,
        "attempt": attempt,
        "idempotency_key": f"{session_id}:{attempt}",
        "failure": failure,
    }


async def test_create_and_read(http: httpx.AsyncClient) -> None:
    session = await create(http, metadata={"cart": "c-1"})
    assert session["id"].startswith("ps_")
    assert session["status"] == "created" and session["seq"] == 0
    assert session["expires_at"] - session["created_at"] == 900_000
    assert session["metadata"] == {"cart": "c-1"}
    assert session["client_secret"].startswith(session["id"])
    mine = await http.get(f"/api/sessions/{session['id']}", headers=customer(session))
    assert mine.status_code == 200 and mine.json()["id"] == session["id"]
    assert "client_secret" not in mine.json()
    assert "payment_method" not in mine.json()


async def test_authentication_and_authorisation(http: httpx.AsyncClient) -> None:
    mine, theirs = await create(http), await create(http)
    path = f"/api/sessions/{mine['id']}"
    assert (await http.get(path)).status_code == 401
    assert (await http.get(path, headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert (await http.get(path, headers={"Authorization": "Basic abc"})).status_code == 401
    foreign = await http.get(path, headers=customer(theirs))
    assert foreign.status_code == 403 and error_code(foreign) == "forbidden"
    # A customer cannot create sessions, complete attempts or read the admin API.
    body = {"order_id": "o", "amount": 1, "currency": "EUR"}
    assert (await http.post("/api/sessions", json=body, headers=customer(mine))).status_code == 403
    done = await http.post(
        f"{path}/complete", json={"attempt": 1, "outcome": "succeeded"}, headers=customer(mine)
    )
    assert done.status_code == 403
    assert (await http.get("/api/admin/summary", headers=customer(mine))).status_code == 403
    assert (await http.get("/api/admin/summary", headers=merchant())).status_code == 403
    assert (await http.get("/api/admin/summary", headers=admin())).status_code == 200
    assert (await snapshot(http, mine["id"]))["seq"] == 0


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"order_id": "o", "amount": 100}, 422, "invalid_currency"),
        ({"order_id": "o", "amount": 100, "currency": "eur"}, 422, "invalid_currency"),
        ({"order_id": "o", "amount": 100, "currency": "EURO"}, 422, "invalid_currency"),
        ({"order_id": "o", "amount": "100", "currency": "EUR"}, 422, "invalid_field"),
        ({"order_id": "o", "amount": 1.5, "currency": "EUR"}, 422, "invalid_field"),
        ({"order_id": "o", "amount": True, "currency": "EUR"}, 422, "invalid_field"),
        ({"order_id": "o", "amount": 0, "currency": "EUR"}, 422, "invalid_field"),
        ({"order_id": "o", "amount": -5, "currency": "EUR"}, 422, "invalid_field"),
        ({"order_id": "", "amount": 5, "currency": "EUR"}, 422, "invalid_field"),
        ({"order_id": 12, "amount": 5, "currency": "EUR"}, 422, "invalid_field"),
        ({"order_id": "o", "amount": 5, "currency": "EUR", "metadata": []}, 422, "invalid_field"),
        (
            {"order_id": "o", "amount": 5, "currency": "EUR", "metadata": {"a": {"b": 1}}},
            422,
            "invalid_field",
        ),
        ({"order_id": "o", "amount": 5, "currency": "EUR", "surprise": 1}, 422, "invalid_field"),
    ],
)
async def test_create_validation(
    http: httpx.AsyncClient, body: dict[str, Any], status: int, code: str
) -> None:
    before = (await http.get("/api/admin/summary", headers=admin())).json()["by_status"]["created"]
    reply = await http.post("/api/sessions", json=body, headers=merchant())
    assert reply.status_code == status and error_code(reply) == code
    assert reply.json()["error"]["message"]
    after = (await http.get("/api/admin/summary", headers=admin())).json()["by_status"]["created"]
    assert after == before, "a refused request created nothing"


@pytest.mark.parametrize(
    "raw, status, code",
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1,2]", 400, "invalid_json"),
        (b"", 400, "invalid_json"),
        (b'{"order_id": "' + b"x" * 20_000 + b'"}', 413, "body_too_large"),
    ],
)
async def test_malformed_and_oversized_bodies(
    http: httpx.AsyncClient, raw: bytes, status: int, code: str
) -> None:
    reply = await http.post("/api/sessions", content=raw, headers=merchant())
    assert reply.status_code == status and error_code(reply) == code


async def test_unknown_routes_and_methods(http: httpx.AsyncClient) -> None:
    missing = await http.get("/api/nothing")
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    wrong = await http.delete("/api/sessions")
    assert wrong.status_code == 405
    ghost = await http.get("/api/sessions/ps_ghost", headers=merchant())
    assert ghost.status_code == 404 and error_code(ghost) == "not_found"


async def test_attempt_validation_and_states(http: httpx.AsyncClient) -> None:
    session = await create(http)
    path = f"/api/sessions/{session['id']}"
    for body, code in [
        ({}, "invalid_field"),
        ({"payment_method": {"card": "4242424242424241"}}, "invalid_card"),
        ({"payment_method": {"card": "42"}}, "invalid_card"),
        ({"payment_method": {"card": 4242424242424242}}, "invalid_field"),
        ({"payment_method": {"iban": "DE00"}}, "invalid_field"),
    ]:
        reply = await http.post(f"{path}/attempts", json=body, headers=customer(session))
        assert reply.status_code == 422 and error_code(reply) == code, body
    assert (await snapshot(http, session["id"]))["seq"] == 0
    started = await http.post(
        f"{path}/attempts", json={"payment_method": {"card": NEVER}}, headers=customer(session)
    )
    assert started.status_code == 202
    body = started.json()
    assert body["status"] == "processing" and body["attempt"] == 1
    assert body["deadline"] - body["attempts"][0]["started_at"] == 1000
    again = await http.post(
        f"{path}/attempts", json={"payment_method": {"card": OK}}, headers=customer(session)
    )
    assert again.status_code == 409 and error_code(again) == "invalid_state"
    bad_reason = await http.post(
        f"{path}/interrupt", json={"reason": "timeout"}, headers=customer(session)
    )
    assert bad_reason.status_code == 422
    lost = await http.post(
        f"{path}/interrupt", json={"reason": "network_error"}, headers=customer(session)
    )
    assert lost.status_code == 200 and lost.json()["status"] == "interrupted"
    assert lost.json()["attempts"][0]["status"] == "network_error"
    early = await http.post(f"{path}/attempts", json={}, headers=customer(session))
    assert early.status_code == 409 and error_code(early) == "retry_not_yet_allowed"
    cancelled = await http.post(f"{path}/cancel", headers=customer(session))
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert cancelled.json()["attempts"][0]["status"] == "voided"
    twice = await http.post(f"{path}/cancel", headers=customer(session))
    assert twice.status_code == 409 and error_code(twice) == "invalid_state"


async def test_idempotency_keys(http: httpx.AsyncClient) -> None:
    body = {"order_id": "idem-1", "amount": 500, "currency": "USD"}
    headers = {**merchant(), "Idempotency-Key": "create-idem-1"}
    first = await http.post("/api/sessions", json=body, headers=headers)
    second = await http.post("/api/sessions", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    other = await http.post("/api/sessions", json={**body, "amount": 501}, headers=headers)
    assert other.status_code == 422 and error_code(other) == "idempotency_key_reused"
    session = first.json()
    path = f"/api/sessions/{session['id']}/attempts"
    pay = {"payment_method": {"card": NEVER}}
    key = {**customer(session), "Idempotency-Key": "pay-1"}
    one = await http.post(path, json=pay, headers=key)
    two = await http.post(path, json=pay, headers=key)
    assert one.status_code == two.status_code == 202 and one.json() == two.json()
    assert len((await snapshot(http, session["id"]))["attempts"]) == 1, "charged once"


async def test_kept_refusals_of_a_customer_are_rate_limited(http: httpx.AsyncClient) -> None:
    """A refusal the same request always gets (``invalid_field``) is kept for its
    Idempotency-Key for 24 h, and the body was refused before the session's rate
    limit was asked: a checkout page's secret stored one record per request with a new
    key and a bad body, as fast as it could send them. Each is a customer command like
    any other now: past the burst and the rate, 429 and nothing kept."""
    session = await create(http)
    path = f"/api/sessions/{session['id']}/attempts"
    started = time.monotonic()
    codes = [
        (
            await http.post(
                path,
                json={"payment_method": {"card": OK}, "bogus": n},
                headers={**customer(session), "Idempotency-Key": f"bad-{n}"},
            )
        ).status_code
        for n in range(40)
    ]
    # 20 at once, then 5 a second (PAYLIVE_COMMAND_BURST, _RATE_PER_S: the defaults).
    allowed = 20 + 5 * (time.monotonic() - started) + 1
    assert set(codes) == {422, 429} and codes.count(422) <= allowed, codes


async def test_idempotency_key_in_use(server: Server, http: httpx.AsyncClient) -> None:
    body = {"order_id": "idem-race", "amount": 500, "currency": "EUR"}
    headers = {**merchant(), "Idempotency-Key": "race-key"}
    replies: list[httpx.Response] = []

    async def post() -> None:
        async with httpx.AsyncClient(base_url=server.url, verify=tls.CONTEXT) as client:
            replies.append(await client.post("/api/sessions", json=body, headers=headers))

    async with anyio.create_task_group() as tg:
        for _ in range(8):
            tg.start_soon(post)
    codes = sorted(r.status_code for r in replies)
    assert 201 in codes and set(codes) <= {201, 409}
    ids = {r.json()["id"] for r in replies if r.status_code == 201}
    assert len(ids) == 1, "one session, however many raced"
    for reply in replies:
        if reply.status_code == 409:
            assert error_code(reply) == "idempotency_key_in_use"


async def test_webhook_signatures(http: httpx.AsyncClient) -> None:
    session, sid = await processing(http)
    body = webhook(sid, 1)
    raw, good = signed(body)
    for headers in (
        {"Content-Type": "application/json"},
        signed(body, secret="not-the-secret-0123456789")[1],
        # Well past the 300 s tolerance: a starved server reads the header seconds later.
        signed(body, at=int(time.time()) - 330)[1],
        signed(body, at=int(time.time()) + 330)[1],
        {"Paylive-Signature": "t=abc,v1=00"},
        {"Paylive-Signature": good["Paylive-Signature"].replace("v1=", "v1=0")},
    ):
        reply = await http.post("/webhooks/sandbox", content=raw, headers=headers)
        assert reply.status_code == 400, headers
        assert error_code(reply) == "invalid_signature"
    # Signed over other bytes than those sent.
    tampered = await http.post(
        "/webhooks/sandbox", content=raw.replace(b"1", b"2", 1), headers=good
    )
    assert tampered.status_code == 400
    assert (await snapshot(http, sid))["status"] == "processing", "nothing applied"
    # Rotation: any configured secret with any v1 is enough.
    header = f"{good['Paylive-Signature']},v1={'0' * 64}"
    applied = await http.post(
        "/webhooks/sandbox", content=raw, headers={"Paylive-Signature": header}
    )
    assert applied.status_code == 200 and applied.json()["applied"] is True
    assert (await snapshot(http, sid))["status"] == "succeeded"


def unheld(text: str, money: str) -> float:
    line = f'paylive_provider_results_unheld_total{{money="{money}"}}'
    return sum(float(x.split()[-1]) for x in text.splitlines() if x.startswith(line))


async def test_a_result_for_a_session_paylive_does_not_hold_is_refused_and_told(
    http: httpx.AsyncClient, server: Server
) -> None:
    """A provider's word for a session this store does not hold (purged, or never made
    here) is refused as before (404, so the provider sends it again), is not taken for
    seen, and is counted; a success is an error in the log: money may have moved that
    nobody here will refund."""
    before = (await http.get("/metrics")).text
    gone = "ps_" + "Q" * 24
    raw, headers = signed(webhook(gone, 1))
    for _ in range(2):  # sent again: refused again, never remembered as applied
        reply = await http.post("/webhooks/sandbox", content=raw, headers=headers)
        assert reply.status_code == 404 and error_code(reply) == "not_found", reply.text
    raw, headers = signed(webhook(gone, 2, "payment.failed", "declined"))
    reply = await http.post("/webhooks/sandbox", content=raw, headers=headers)
    assert reply.status_code == 404 and error_code(reply) == "not_found", reply.text
    after = (await http.get("/metrics")).text
    assert unheld(after, "moved") - unheld(before, "moved") == 2
    assert unheld(after, "none") - unheld(before, "none") == 1

    def told() -> bool:
        return f"evt_{gone}_1_payment.succeeded says succeeded" in server.log()

    await until(told, timeout=5)
    assert "the money may have moved" in server.log()


async def test_a_result_for_an_attempt_the_session_lacks_is_refused_each_time_it_comes(
    http: httpx.AsyncClient,
) -> None:
    """404 for an unknown attempt (section 3.2) is there so that the provider sends the
    event again: it must not be remembered as applied, or its next delivery is a 200
    ``duplicate`` and the provider stops sending a result paylive never applied."""
    session, sid = await processing(http)
    raw, headers = signed(webhook(sid, 2))
    for _ in range(2):
        reply = await http.post("/webhooks/sandbox", content=raw, headers=headers)
        assert reply.status_code == 404 and error_code(reply) == "unknown_attempt", reply.text
    got = await snapshot(http, sid)
    assert got["status"] == "processing" and got["seq"] == 1


async def test_duplicate_webhooks_apply_once(http: httpx.AsyncClient) -> None:
    session, sid = await processing(http)
    raw, headers = signed(webhook(sid, 1))
    first = await http.post("/webhooks/sandbox", content=raw, headers=headers)
    again = await http.post("/webhooks/sandbox", content=raw, headers=headers)
    assert first.json()["applied"] is True and again.json()["duplicate"] is True
    # The same result under a new event id changes nothing either.
    raw2, headers2 = signed(webhook(sid, 1, event_id="evt_other"))
    third = await http.post("/webhooks/sandbox", content=raw2, headers=headers2)
    assert third.status_code == 200 and third.json()["applied"] is False
    # A failure after the success changes nothing.
    raw3, headers3 = signed(webhook(sid, 1, "payment.failed", "declined"))
    fourth = await http.post("/webhooks/sandbox", content=raw3, headers=headers3)
    assert fourth.json()["applied"] is False
    got = await snapshot(http, sid)
    assert got["status"] == "succeeded" and got["seq"] == 2 and not got["needs_review"]


async def test_success_after_cancel_is_refunded(http: httpx.AsyncClient) -> None:
    session, sid = await processing(http)
    await http.post(f"/api/sessions/{sid}/cancel", headers=customer(session))
    raw, headers = signed(webhook(sid, 1))
    reply = await http.post("/webhooks/sandbox", content=raw, headers=headers)
    assert reply.status_code == 200
    got = await snapshot(http, sid)
    assert got["status"] == "cancelled" and got["needs_review"] is True
    assert got["attempts"][0]["status"] == "refunded"
    summary = (await http.get("/api/admin/summary", headers=admin())).json()
    assert summary["needs_review"] >= 1


async def test_merchant_complete(http: httpx.AsyncClient) -> None:
    session = await create(http)
    sid = session["id"]
    path = f"/api/sessions/{sid}"
    await http.post(
        f"{path}/attempts", json={"payment_method": {"card": NEVER}}, headers=merchant()
    )
    for body in (
        {"attempt": 1, "outcome": "maybe"},
        {"attempt": "1", "outcome": "succeeded"},
        {"attempt": 1, "outcome": "succeeded", "decline_code": "card_declined"},
    ):
        reply = await http.post(f"{path}/complete", json=body, headers=merchant())
        assert reply.status_code == 422, body
    unknown = await http.post(
        f"{path}/complete", json={"attempt": 5, "outcome": "succeeded"}, headers=merchant()
    )
    assert unknown.status_code == 404
    declined = await http.post(
        f"{path}/complete",
        json={"attempt": 1, "outcome": "declined", "decline_code": "card_declined"},
        headers=merchant(),
    )
    assert declined.status_code == 200 and declined.json()["status"] == "interrupted"
    assert declined.json()["last_error"]["reason"] == "declined"


async def test_admin_api(http: httpx.AsyncClient) -> None:
    newest = await create(http)
    listed = await http.get("/api/admin/sessions?status=active&limit=3", headers=admin())
    assert listed.status_code == 200
    sessions = listed.json()["sessions"]
    assert 1 <= len(sessions) <= 3 and sessions[0]["id"] == newest["id"]
    assert all(s["status"] in ("created", "processing", "interrupted") for s in sessions)
    for query in ("status=weird", "limit=0", "limit=abc", "limit=100000"):
        reply = await http.get(f"/api/admin/sessions?{query}", headers=admin())
        assert reply.status_code == 422, query
    summary = (await http.get("/api/admin/summary", headers=admin())).json()
    assert set(summary) >= {
        "active",
        "by_status",
        "interruptions",
        "success_rate",
        "recovered_by_retry",
        "needs_review",
    }
    assert set(summary["interruptions"]) == {
        "timeout",
        "network_error",
        "declined",
        "provider_error",
    }
    assert summary["active"] == sum(
        summary["by_status"][s] for s in ("created", "processing", "interrupted")
    )


async def test_health_readiness_metrics(http: httpx.AsyncClient) -> None:
    assert (await http.get("/healthz")).status_code == 200
    ready = await http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    text = (await http.get("/metrics")).text
    for name in (
        "paylive_sockets_open",
        "paylive_events_published_total",
        "paylive_delivery_latency_seconds_bucket",
        "paylive_interruptions_total",
        "paylive_late_successes_total",
        "paylive_refunds_total",
    ):
        assert name in text


async def test_customer_rate_limit(http: httpx.AsyncClient) -> None:
    session = await create(http)
    path = f"/api/sessions/{session['id']}/interrupt"
    codes = [
        (
            await http.post(path, json={"reason": "network_error"}, headers=customer(session))
        ).status_code
        for _ in range(30)
    ]
    assert 429 in codes
    assert set(codes) <= {409, 429}


async def test_the_sandbox_serves_no_stripe_webhook_and_says_so_to_pages(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.get("/api/checkout/config")).json() == {"gateway": "sandbox"}
    stripe = await http.post("/webhooks/stripe", content=b"{}", headers={"Stripe-Signature": "t=1"})
    assert stripe.status_code == 404 and error_code(stripe) == "not_found"
