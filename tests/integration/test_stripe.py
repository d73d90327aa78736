"""The Stripe gateway end to end: a real ``paylive serve`` (PAYLIVE_GATEWAY=stripe)
talking to a real localstripe through the official library, over the real HTTP and
WebSocket API, with localstripe's signed webhooks pointed at paylive.

Between paylive and localstripe sits a fault proxy (tests/support/faultproxy.py), so
that a test can lose Stripe's answers or make Stripe unreachable at a chosen request.
localstripe signs its webhooks with the second of paylive's two webhook secrets, so
every event here also tests secret rotation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import anyio
import httpx
import pytest

from paylive.telemetry import context

from ..support.asyncapi import check as fits_description
from ..support.client import Socket, admin, create, merchant, open_socket, session_url
from ..support.faultproxy import FaultProxy
from ..support.localstripe import (
    PUBLISHABLE_KEY,
    SECRET_KEY,
    WEBHOOK_SECRET,
    LocalStripe,
)
from ..support.ports import free_port
from ..support.servers import Server
from ..support.waiting import until

pytestmark = pytest.mark.anyio

OK = "4242424242424242"
DECLINED = "4000000000000341"  # localstripe declines it when it is charged
THREE_D_SECURE = "4000002500003155"
RETIRED_SECRET = "whsec_retired_0123456789"
# Long enough for a 3-D Secure step (pay, authenticate at localstripe, check) to end
# before it: at 2 s the parallel suite on a slow 2-core machine once timed it out.
ATTEMPT_TIMEOUT_MS = 4000

HTTP_TIMEOUT = 15


def SERVER_ENV(request: pytest.FixtureRequest) -> dict[str, str]:
    proxy: FaultProxy = request.getfixturevalue("proxy")
    return {
        "PAYLIVE_GATEWAY": "stripe",
        "PAYLIVE_STRIPE_SECRET_KEY": SECRET_KEY,
        "PAYLIVE_STRIPE_WEBHOOK_SECRET": f"{RETIRED_SECRET},{WEBHOOK_SECRET}",
        "PAYLIVE_STRIPE_API_BASE": proxy.url,
        "PAYLIVE_STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
        "PAYLIVE_ATTEMPT_TIMEOUT_MS": str(ATTEMPT_TIMEOUT_MS),
        # The outbox tries a failing capture again within half a second.
        "PAYLIVE_EFFECT_RETRY_BASE_MS": "200",
        "PAYLIVE_EFFECT_RETRY_CAP_MS": "500",
    }


def CHECK_SERVER_LOG(log: str) -> None:
    assert SECRET_KEY not in log and "_secret_" not in log, "a secret reached the log"


@pytest.fixture(scope="module")
def proxy(localstripe: LocalStripe) -> Iterator[FaultProxy]:
    fault = FaultProxy(localstripe.url).start()
    yield fault
    fault.close()


@pytest.fixture(autouse=True)
def network(localstripe: LocalStripe, proxy: FaultProxy, server: Server) -> Iterator[None]:
    """Each test starts with Stripe reachable and its webhooks going to paylive."""
    proxy.restore()
    localstripe.send_webhooks_to(f"{server.url}/webhooks/stripe")
    yield
    proxy.restore()


Opener = Callable[[], Awaitable[tuple[dict[str, Any], Socket]]]


@pytest.fixture
async def opened(server: Server, http: httpx.AsyncClient) -> AsyncIterator[Opener]:
    """Opens a new session and its socket, past the snapshot; closes them after the test."""
    sockets: list[Socket] = []

    async def open_one() -> tuple[dict[str, Any], Socket]:
        session = await create(http)
        sock = await open_socket(session_url(server.ws_url, session))
        sockets.append(sock)
        assert (await sock.recv())["type"] == "snapshot"
        return session, sock

    yield open_one
    for sock in sockets:
        await sock.conn.close()


def attempt_of(message: dict[str, Any], number: int) -> dict[str, Any]:
    attempt: dict[str, Any] = message["data"]["session"]["attempts"][number - 1]
    return attempt


def signed(event: dict[str, Any], secret: str = WEBHOOK_SECRET, at: int | None = None) -> dict:
    """Headers and body of a webhook as Stripe signs one."""
    payload = json.dumps(event)
    stamp = int(time.time()) if at is None else at
    mac = hmac.new(secret.encode(), f"{stamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return {
        "content": payload,
        "headers": {"Stripe-Signature": f"t={stamp},v1={mac}", "Content-Type": "application/json"},
    }


def stored_event(localstripe: LocalStripe, kind: str, pi: str) -> dict[str, Any]:
    """The event localstripe made for ``pi``, as Stripe would send it again."""
    events = localstripe.api("GET", f"/v1/events?type={kind}")["data"]
    found = [e for e in events if e["data"]["object"]["id"] == pi]
    assert len(found) == 1, found
    return found[0]


def calls(proxy: FaultProxy, pi: str) -> list[tuple[str, str | None]]:
    """Stripe API calls paylive made about ``pi``: (last path segment, idempotency key)."""
    return [(path.rsplit("/", 1)[1], key) for _m, path, key in proxy.seen if pi in path]


async def asked_to_authenticate(sock: Socket) -> dict[str, Any]:
    """The durable state event that pushes a 3-D Secure step to the page."""
    return await sock.until(
        lambda m: m["type"] == "state" and m["data"]["cause"] == "requires_action"
    )


def authenticate(localstripe: LocalStripe, pi: str, client_secret: str, success: bool) -> None:
    """What Stripe.js does in the page with the client secret and the publishable key."""
    httpx.post(
        f"{localstripe.url}/v1/payment_intents/{pi}/_authenticate?success={str(success).lower()}",
        json={"key": PUBLISHABLE_KEY, "client_secret": client_secret},
    ).raise_for_status()


async def test_a_payment_is_authorized_then_captured(
    server: Server,
    http: httpx.AsyncClient,
    opened: Opener,
    localstripe: LocalStripe,
    proxy: FaultProxy,
) -> None:
    session, sock = await opened()
    key = f"{session['id']}:1"
    await sock.send({"type": "pay", "payment_method": {"stripe": localstripe.payment_method(OK)}})
    done = await sock.state("succeeded")
    assert done["data"]["cause"] == "succeeded"
    pi = attempt_of(done, 1)["provider_ref"]
    intent = localstripe.payment_intent(pi)
    assert intent["status"] == "succeeded" and intent["capture_method"] == "manual"
    assert (intent["amount"], intent["currency"]) == (1999, "eur")
    assert intent["latest_charge"]["captured"] is True
    metadata = dict(intent["metadata"])
    # The charge's trace, so that Stripe's webhook continues it (protocol 9).
    assert context.parse_traceparent(metadata.pop("paylive_traceparent")) is not None
    assert metadata == {
        "paylive_session": session["id"],
        "paylive_attempt": "1",
        "paylive_key": key,
    }
    # Created, named on the attempt, confirmed, captured: each call under the attempt's key.
    creates = [k for m, path, k in proxy.seen if path == "/v1/payment_intents" and m == "POST"]
    assert f"{key}:create" in creates
    assert calls(proxy, pi) == [("confirm", f"{key}:confirm"), ("capture", f"{key}:capture")]
    # Stripe's payment_intent.succeeded follows a second later and changes nothing: once
    # paylive has applied it, no state follows (the socket is given a moment for one
    # already on its way). Waiting for the webhook itself, not a window that may close
    # before it comes on a loaded machine.
    event = stored_event(localstripe, "payment_intent.succeeded", pi)
    await until(lambda: f"provider event {event['id']} applied" in server.log(), timeout=10)
    with pytest.raises(TimeoutError):
        await sock.until(lambda m: m["type"] == "state", timeout=0.3)


async def test_a_decline_then_a_retry_that_pays(
    server: Server, http: httpx.AsyncClient, opened: Opener, localstripe: LocalStripe
) -> None:
    session, sock = await opened()
    await sock.send(
        {"type": "pay", "payment_method": {"stripe": localstripe.payment_method(DECLINED)}}
    )
    declined = await sock.state("interrupted")
    assert declined["data"]["cause"] == "declined"
    first = attempt_of(declined, 1)
    assert (first["status"], first["decline_code"]) == ("declined", "card_declined")
    prompt = await sock.until(lambda m: m["type"] == "retry_prompt")
    assert prompt["data"]["outcome_unknown"] is False
    assert localstripe.payment_intent(first["provider_ref"])["status"] == "requires_payment_method"
    await anyio.sleep(max(0.0, prompt["data"]["retry_at"] / 1000 - time.time() + 0.05))
    await sock.send({"type": "retry", "payment_method": {"stripe": localstripe.payment_method(OK)}})
    paid = await sock.state("succeeded")
    assert attempt_of(paid, 2)["status"] == "succeeded"
    assert localstripe.payment_intent(attempt_of(paid, 2)["provider_ref"])["status"] == "succeeded"


async def test_three_d_secure_is_pushed_to_the_page_and_completed(
    server: Server, http: httpx.AsyncClient, opened: Opener, localstripe: LocalStripe
) -> None:
    session, sock = await opened()
    await sock.send(
        {"type": "pay", "payment_method": {"stripe": localstripe.payment_method(THREE_D_SECURE)}}
    )
    asked = await asked_to_authenticate(sock)
    assert asked["data"]["session"]["status"] == "processing"
    fits_description(asked, "customer")  # docs/asyncapi.yaml describes the step
    action = attempt_of(asked, 1)["action"]
    pi = attempt_of(asked, 1)["provider_ref"]
    assert action == {
        "type": "authenticate",
        "provider": "stripe",
        "client_secret": localstripe.payment_intent(pi)["client_secret"],
    }
    authenticate(localstripe, pi, action["client_secret"], success=True)
    await sock.send({"type": "check", "ref": "c1"})
    paid = await sock.state("succeeded")
    assert "action" not in attempt_of(paid, 1)
    assert localstripe.payment_intent(pi)["status"] == "succeeded"


async def test_a_failed_authentication_is_a_decline(
    server: Server, http: httpx.AsyncClient, opened: Opener, localstripe: LocalStripe
) -> None:
    session, sock = await opened()
    await sock.send(
        {"type": "pay", "payment_method": {"stripe": localstripe.payment_method(THREE_D_SECURE)}}
    )
    asked = await asked_to_authenticate(sock)
    action = attempt_of(asked, 1)["action"]
    pi = attempt_of(asked, 1)["provider_ref"]
    authenticate(localstripe, pi, action["client_secret"], success=False)
    checked = await http.post(f"/api/sessions/{session['id']}/check", headers=merchant())
    assert checked.status_code == 200
    declined = await sock.state("interrupted")
    assert attempt_of(declined, 1)["decline_code"] == "payment_intent_authentication_failure"


async def test_an_attempt_that_times_out_is_voided_before_the_retry(
    server: Server,
    http: httpx.AsyncClient,
    opened: Opener,
    localstripe: LocalStripe,
    proxy: FaultProxy,
) -> None:
    session, sock = await opened()
    await sock.send(
        {"type": "pay", "payment_method": {"stripe": localstripe.payment_method(THREE_D_SECURE)}}
    )
    timed_out = await sock.state("interrupted", timeout=ATTEMPT_TIMEOUT_MS / 1000 + 3)
    assert timed_out["data"]["cause"] == "timeout"
    prompt = await sock.until(lambda m: m["type"] == "retry_prompt")
    assert prompt["data"]["outcome_unknown"] is True
    pi = attempt_of(timed_out, 1)["provider_ref"]
    assert localstripe.payment_intent(pi)["status"] == "requires_action"
    await anyio.sleep(max(0.0, prompt["data"]["retry_at"] / 1000 - time.time() + 0.05))
    await sock.send({"type": "retry", "payment_method": {"stripe": localstripe.payment_method(OK)}})
    voided = await sock.until(lambda m: m["type"] == "state" and m["data"]["cause"] == "voided")
    assert attempt_of(voided, 1)["status"] == "voided"
    assert localstripe.payment_intent(pi)["status"] == "canceled"
    assert ("cancel", f"{session['id']}:1:cancel") in calls(proxy, pi)
    paid = await sock.state("succeeded")
    assert attempt_of(paid, 2)["status"] == "succeeded"


async def lost_capture(
    server: Server,
    http: httpx.AsyncClient,
    opened: Opener,
    localstripe: LocalStripe,
    proxy: FaultProxy,
) -> tuple[dict[str, Any], Socket, str]:
    """An attempt whose capture reached Stripe, which then became unreachable: Stripe
    took the money; paylive does not know (its webhook is lost too), and the attempt
    times out with its outcome unknown."""
    localstripe.send_webhooks_to(f"http://127.0.0.1:{free_port()}/lost")
    session, sock = await opened()
    proxy.cut_after("POST", r"/capture$", key=f"{session['id']}:1:capture")
    await sock.send({"type": "pay", "payment_method": {"stripe": localstripe.payment_method(OK)}})
    interrupted = await sock.state("interrupted", timeout=ATTEMPT_TIMEOUT_MS / 1000 + 5)
    assert interrupted["data"]["cause"] == "timeout"
    pi = attempt_of(interrupted, 1)["provider_ref"]
    assert proxy.cut and localstripe.payment_intent(pi)["status"] == "succeeded"
    prompt = await sock.until(lambda m: m["type"] == "retry_prompt")
    assert prompt["data"]["outcome_unknown"] is True
    # The capture waits in the outbox, tried again and again under its one key.
    with anyio.fail_after(10):
        while True:
            query = f"/api/admin/effects?session={session['id']}"
            found = (await http.get(query, headers=admin())).json()["effects"]
            if [(e["kind"], e["tries"] > 0) for e in found] == [("capture", True)]:
                break
            await anyio.sleep(0.05)
    localstripe.send_webhooks_to(f"{server.url}/webhooks/stripe")
    await anyio.sleep(max(0.0, prompt["data"]["retry_at"] / 1000 - time.time() + 0.05))
    return session, sock, pi


async def test_a_capture_paylive_did_not_hear_of_makes_the_retry_already_paid(
    server: Server,
    http: httpx.AsyncClient,
    opened: Opener,
    localstripe: LocalStripe,
    proxy: FaultProxy,
) -> None:
    session, sock, pi = await lost_capture(server, http, opened, localstripe, proxy)
    # Stripe is back, but not yet for the outbox's capture: the void finds the money
    # taken first.
    proxy.restore(still_lost=("POST", r"/capture$"))
    retry = await http.post(
        f"/api/sessions/{session['id']}/attempts",
        json={"payment_method": {"stripe": localstripe.payment_method(OK)}},
        headers=merchant(),
    )
    assert retry.status_code == 409 and retry.json()["error"]["code"] == "already_paid"
    paid = await sock.state("succeeded")
    assert paid["data"]["cause"] == "late_success"
    assert len(paid["data"]["session"]["attempts"]) == 1, "no second attempt was started"
    # Then the capture's own answer closes its effect; every try went under one key.
    proxy.restore()
    await sock.until(
        lambda m: (
            m["type"] == "state"
            and m["data"]["cause"] == "effect_done"
            and m["data"]["effect"]["kind"] == "capture"
        ),
        timeout=10,
    )
    tries = [key for step, key in calls(proxy, pi) if step == "capture"]
    assert len(tries) >= 2 and set(tries) == {f"{session['id']}:1:capture"}
    assert localstripe.refunds(pi) == []


async def test_a_late_capture_webhook_is_reconciled_and_applied_once(
    server: Server,
    http: httpx.AsyncClient,
    opened: Opener,
    localstripe: LocalStripe,
    proxy: FaultProxy,
) -> None:
    session, sock, pi = await lost_capture(server, http, opened, localstripe, proxy)
    # Stripe sends an event again until it is answered 2xx: here, the one that was lost.
    event = stored_event(localstripe, "payment_intent.succeeded", pi)
    first = await http.post("/webhooks/stripe", **signed(event))
    assert first.json() == {"received": True, "applied": True}
    late = await sock.state("succeeded")
    assert late["data"]["cause"] == "late_success"
    again = await http.post("/webhooks/stripe", **signed(event))
    assert again.json() == {"received": True, "duplicate": True}


def fake_cancel(match: Any) -> dict[str, Any]:
    return {"id": match[1], "object": "payment_intent", "status": "canceled"}


async def cancelled_while_authenticating(
    server: Server,
    http: httpx.AsyncClient,
    opened: Opener,
    localstripe: LocalStripe,
    proxy: FaultProxy,
) -> tuple[dict[str, Any], Socket, str, str]:
    """A session cancelled while its attempt waited for 3-D Secure, whose void never
    reached Stripe although paylive was told it was done (a lost void)."""
    session, sock = await opened()
    await sock.send(
        {"type": "pay", "payment_method": {"stripe": localstripe.payment_method(THREE_D_SECURE)}}
    )
    asked = await asked_to_authenticate(sock)
    pi = attempt_of(asked, 1)["provider_ref"]
    secret = attempt_of(asked, 1)["action"]["client_secret"]
    proxy.fake("POST", r"/v1/payment_intents/(pi_\w+)/cancel$", 200, fake_cancel)
    await sock.send({"type": "cancel"})
    await sock.state("cancelled")
    proxy.restore()
    authenticate(localstripe, pi, secret, success=True)
    assert localstripe.payment_intent(pi)["status"] == "requires_capture"
    return session, sock, pi, secret


async def test_an_authorization_after_the_end_is_released_not_charged(
    server: Server,
    http: httpx.AsyncClient,
    opened: Opener,
    localstripe: LocalStripe,
    proxy: FaultProxy,
) -> None:
    session, sock, pi, _ = await cancelled_while_authenticating(
        server, http, opened, localstripe, proxy
    )
    # Stripe announces the hold (localstripe does not send this event; Stripe does).
    intent = localstripe.payment_intent(pi)
    event = {
        "id": f"evt_hold_{pi}",
        "type": "payment_intent.amount_capturable_updated",
        "data": {"object": intent},
    }
    answer = await http.post("/webhooks/stripe", **signed(event))
    assert answer.json() == {"received": True, "applied": True}
    # The release waits in the outbox, and is made under the effect's own key.
    released = await sock.until(
        lambda m: m["type"] == "state" and m["data"]["cause"] == "effect_done", timeout=5
    )
    assert released["data"]["effect"]["kind"] == "void"
    assert localstripe.payment_intent(pi)["status"] == "canceled"
    assert ("cancel", f"{session['id']}:1:void") in calls(proxy, pi)
    after = (await http.get(f"/api/sessions/{session['id']}", headers=merchant())).json()
    assert after["status"] == "cancelled" and after["needs_review"] is False


async def test_a_success_after_the_end_is_refunded_once(
    server: Server,
    http: httpx.AsyncClient,
    opened: Opener,
    localstripe: LocalStripe,
    proxy: FaultProxy,
) -> None:
    session, sock, pi, _ = await cancelled_while_authenticating(
        server, http, opened, localstripe, proxy
    )
    # The money is taken anyway (say, from Stripe's dashboard); Stripe's webhook follows.
    localstripe.api("POST", f"/v1/payment_intents/{pi}/capture")
    refunded = await sock.until(
        lambda m: m["type"] == "state" and m["data"]["cause"] == "late_success_refunded",
        timeout=5,
    )
    assert refunded["data"]["session"]["status"] == "cancelled"
    assert refunded["data"]["session"]["needs_review"] is True
    assert attempt_of(refunded, 1)["status"] == "refunded"
    # The refund waits in the outbox; it is made once, under the effect's own key.
    done = await sock.until(
        lambda m: m["type"] == "state" and m["data"]["cause"] == "effect_done", timeout=5
    )
    assert done["data"]["effect"]["kind"] == "refund"
    assert (f"{session['id']}:1:refund") in [k for _m, path, k in proxy.seen if "refunds" in path]
    refunds = localstripe.refunds(pi)
    assert [(r["amount"], r["status"]) for r in refunds] == [(1999, "succeeded")]
    event = stored_event(localstripe, "payment_intent.succeeded", pi)
    again = await http.post("/webhooks/stripe", **signed(event))
    assert again.json() == {"received": True, "duplicate": True}
    assert len(localstripe.refunds(pi)) == 1


async def test_webhooks_need_stripes_signature(
    server: Server, http: httpx.AsyncClient, opened: Opener, localstripe: LocalStripe
) -> None:
    session, sock = await opened()
    await sock.send(
        {"type": "pay", "payment_method": {"stripe": localstripe.payment_method(THREE_D_SECURE)}}
    )
    asked = await asked_to_authenticate(sock)
    intent = dict(localstripe.payment_intent(attempt_of(asked, 1)["provider_ref"]))
    intent["status"] = "succeeded"  # a forged success
    event = {"id": "evt_forged", "type": "payment_intent.succeeded", "data": {"object": intent}}
    # A header that is not ASCII was a TypeError in Stripe's library (a 500); a timestamp
    # ahead of the clock was accepted however far (the library checks only the past).
    not_ascii = f"t={int(time.time())},v1=\xe9".encode("latin-1")
    for bad in (
        signed(event, secret="whsec_not_ours_0123456789"),
        signed(event, at=int(time.time()) - 301),
        signed(event, at=int(time.time()) + 3600),
        {"content": json.dumps(event), "headers": {"Content-Type": "application/json"}},
        {"content": json.dumps(event), "headers": {b"Stripe-Signature": not_ascii}},
    ):
        answer = await http.post("/webhooks/stripe", **bad)
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["code"] == "invalid_signature"
    now = (await http.get(f"/api/sessions/{session['id']}", headers=merchant())).json()
    assert now["status"] == "processing" and now["seq"] == asked["seq"], "nothing applied"
    # The retired secret still verifies while it is listed (rotation).
    ignored = {"id": "evt_other", "type": "customer.created", "data": {"object": {}}}
    answer = await http.post("/webhooks/stripe", **signed(ignored, secret=RETIRED_SECRET))
    assert answer.json() == {"received": True, "ignored": True}


async def test_card_numbers_never_reach_paylive(
    server: Server, http: httpx.AsyncClient, opened: Opener
) -> None:
    session, sock = await opened()
    path = f"/api/sessions/{session['id']}/attempts"
    for method in ({"card": OK}, {"stripe": "tok_visa"}, {"stripe": 42}, "pm_x"):
        answer = await http.post(path, json={"payment_method": method}, headers=merchant())
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "invalid_payment_method"
    await sock.send({"type": "pay", "payment_method": {"card": OK}, "ref": "p1"})
    refused = await sock.until(lambda m: m["type"] == "error")
    assert refused["data"]["code"] == "invalid_payment_method"
    now = (await http.get(f"/api/sessions/{session['id']}", headers=merchant())).json()
    assert now["status"] == "created" and now["seq"] == 0


async def test_the_page_learns_how_to_collect_a_card(
    server: Server, http: httpx.AsyncClient, proxy: FaultProxy
) -> None:
    config = (await http.get("/api/checkout/config")).json()
    assert config == {
        "gateway": "stripe",
        "stripe": {"publishable_key": PUBLISHABLE_KEY, "js": f"{proxy.url}/js.stripe.com/v3/"},
    }
    sandbox = await http.post("/webhooks/sandbox", content=b"{}")
    assert sandbox.status_code == 404


async def test_refunds_asked_for_are_stripe_refunds_of_their_amounts(
    server: Server,
    http: httpx.AsyncClient,
    opened: Opener,
    localstripe: LocalStripe,
    proxy: FaultProxy,
) -> None:
    session, sock = await opened()
    sid = session["id"]
    await sock.send({"type": "pay", "payment_method": {"stripe": localstripe.payment_method(OK)}})
    pi = attempt_of(await sock.state("succeeded"), 1)["provider_ref"]
    for amount, key in ((500, "stripe-r1"), (None, "stripe-r2")):
        body = {} if amount is None else {"amount": amount, "reason": "returned"}
        made = await http.post(
            f"/api/sessions/{sid}/refunds",
            json=body,
            headers={**merchant(), "Idempotency-Key": key},
        )
        assert made.status_code == 202, made.text
        await sock.until(
            lambda m: m["type"] == "state" and m["data"]["cause"] == "effect_done", timeout=10
        )
    refunds = sorted((r["amount"], r["status"]) for r in localstripe.refunds(pi))
    assert refunds == [(500, "succeeded"), (1499, "succeeded")]
    keys = [k for _m, path, k in proxy.seen if "refunds" in path and k]
    assert {f"{sid}:1:refund.1", f"{sid}:1:refund.2"} <= set(keys)
    got = (await http.get(f"/api/sessions/{sid}", headers=merchant())).json()
    assert got["amount_refunded"] == 1999
    third = await http.post(f"/api/sessions/{sid}/refunds", json={}, headers=merchant())
    assert third.status_code == 409
    assert third.json()["error"]["code"] == "refund_exceeds_captured"
    assert len(localstripe.refunds(pi)) == 2


# What Stripe says when it refuses a request, none of it for a customer's eyes.
STAFF_ONLY = {
    "authentication_error": (401, "Invalid API Key provided: sk_test_******************wxyz"),
    "api_error": (500, "An unknown error occurred (request req_staff_only_0123)"),
}


async def test_the_providers_own_words_never_reach_the_customer(
    server: Server,
    http: httpx.AsyncClient,
    opened: Opener,
    localstripe: LocalStripe,
    proxy: FaultProxy,
) -> None:
    """A request Stripe refuses (a wrong key, its own failure) and a decline each end the
    attempt; what the customer's socket and GET show is paylive's line for the reason
    (and the decline code), never Stripe's message nor its key or request id."""

    def refusal(kind: str) -> Callable[[Any], dict[str, Any]]:
        return lambda _match: {"error": {"type": kind, "message": STAFF_ONLY[kind][1]}}

    for kind, path, reason in (
        ("authentication_error", r"/v1/payment_intents$", "provider_error"),
        ("api_error", r"/v1/payment_intents/pi_\w+/confirm$", "network_error"),
    ):
        proxy.restore()
        proxy.fake("POST", path, STAFF_ONLY[kind][0], refusal(kind))
        session, sock = await opened()
        card = {"stripe": localstripe.payment_method(OK)}
        await sock.send({"type": "pay", "payment_method": card})
        ended = await sock.state("interrupted")
        got = await http.get(
            f"/api/sessions/{session['id']}",
            headers={"Authorization": f"Bearer {session['client_secret']}"},
        )
        for shown in (ended["data"]["session"], got.json()):
            assert shown["last_error"]["reason"] == reason, shown
            text = json.dumps(shown)
            assert STAFF_ONLY[kind][1] not in text and "sk_test" not in text, text
    proxy.restore()
    session, sock = await opened()
    await sock.send(
        {"type": "pay", "payment_method": {"stripe": localstripe.payment_method(DECLINED)}}
    )
    declined = (await sock.state("interrupted"))["data"]["session"]["last_error"]
    assert declined == {
        "reason": "declined",
        "attempt": 1,
        "message": "the card was declined",
        "decline_code": "card_declined",
    }
