"""The demo checkout in Stripe mode, in headless Chromium: the card is typed into the
card field Stripe.js mounts (here localstripe's stand-in for Stripe.js, served at
``/js.stripe.com/v3/`` by a real localstripe), the page sends paylive a payment method,
never a card number, and completes 3-D Secure when paylive pushes the step."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ..support.browser import require_browser
from ..support.localstripe import PUBLISHABLE_KEY, SECRET_KEY, WEBHOOK_SECRET, LocalStripe
from ..support.servers import API_KEY, Server

require_browser()
from playwright.sync_api import Page, Request, expect  # noqa: E402

OK = "4242424242424242"
THREE_D_SECURE = "4000002500003155"


def SERVER_ENV(request: pytest.FixtureRequest) -> dict[str, str]:
    localstripe: LocalStripe = request.getfixturevalue("localstripe")
    return {
        "PAYLIVE_GATEWAY": "stripe",
        "PAYLIVE_STRIPE_SECRET_KEY": SECRET_KEY,
        "PAYLIVE_STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PAYLIVE_STRIPE_API_BASE": localstripe.url,
        "PAYLIVE_STRIPE_PUBLISHABLE_KEY": PUBLISHABLE_KEY,
        "PAYLIVE_ATTEMPT_TIMEOUT_MS": "10000",
    }


@pytest.fixture(scope="module", autouse=True)
def stripe_webhooks_to_paylive(localstripe: LocalStripe, server: Server) -> None:
    localstripe.send_webhooks_to(f"{server.url}/webhooks/stripe")


def pay_with(page: Page, server: str, number: str) -> tuple[str, list[dict[str, Any]]]:
    """Open the demo, type ``number`` into Stripe's card field and pay; the session id
    and every payment method the page sent paylive."""
    sent: list[dict[str, Any]] = []

    def watch(request: Request) -> None:
        if request.url.startswith(server) and request.post_data:
            sent.append({"url": request.url, "body": request.post_data})

    page.on("request", watch)
    page.on("websocket", lambda ws: ws.on("framesent", lambda frame: sent.append({"ws": frame})))
    page.goto(f"{server}/demo")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(page.locator("#stripe-card-box")).to_be_visible()
    expect(page.locator("#sandbox-card")).to_be_hidden()
    field = page.locator("#stripe-card")
    field.locator("input[placeholder=number]").fill(number)
    field.locator("input[placeholder=exp_month]").fill("12")
    field.locator("input[placeholder=exp_year]").fill("30")
    field.locator("input[placeholder=cvc]").fill("123")
    field.locator("input[placeholder=postal_code]").fill("75001")
    page.locator("#pay").click()
    session_id = parse_qs(urlsplit(page.url).fragment)["session"][0]
    return session_id, sent


def session_of(server: str, session_id: str) -> dict[str, Any]:
    reply = httpx.get(
        f"{server}/api/sessions/{session_id}",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    body: dict[str, Any] = reply.json()
    return body


def test_the_card_goes_to_stripe_and_paylive_gets_a_payment_method(
    page: Page, server_url: str, localstripe: LocalStripe
) -> None:
    session_id, sent = pay_with(page, server_url, OK)
    expect(page.locator("#status")).to_have_attribute("data-status", "succeeded")
    attempt = session_of(server_url, session_id)["attempts"][0]
    assert localstripe.payment_intent(attempt["provider_ref"])["status"] == "succeeded"
    frames = [str(m.get("ws") or m.get("body")) for m in sent]
    assert any('"stripe"' in f for f in frames), frames
    assert not any(OK in f for f in frames), "the card number reached paylive"


def test_three_d_secure_is_completed_in_the_page(
    page: Page, server_url: str, localstripe: LocalStripe
) -> None:
    session_id, _ = pay_with(page, server_url, THREE_D_SECURE)
    # paylive pushes the step; Stripe.js (the stand-in: a dialog) asks the customer.
    page.get_by_role("button", name="Complete authentication").click()
    expect(page.locator("#status")).to_have_attribute("data-status", "succeeded")
    attempt = session_of(server_url, session_id)["attempts"][0]
    assert attempt["status"] == "succeeded" and "action" not in attempt
    assert localstripe.payment_intent(attempt["provider_ref"])["status"] == "succeeded"


def test_a_failed_authentication_lets_the_customer_retry(
    page: Page, server_url: str, localstripe: LocalStripe
) -> None:
    session_id, _ = pay_with(page, server_url, THREE_D_SECURE)
    page.get_by_role("button", name="Fail authentication").click()
    expect(page.locator("#status")).to_have_attribute("data-status", "interrupted")
    attempt = session_of(server_url, session_id)["attempts"][0]
    assert attempt["decline_code"] == "payment_intent_authentication_failure"
