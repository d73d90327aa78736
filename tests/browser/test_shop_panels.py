"""The dashboard's shop panels in headless Chromium: a webhook that failed for good is
shown and sent again from its row; a search finds a session by its order id."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from ..support.browser import require_browser
from ..support.client import admin, merchant
from ..support.receiver import Receiver
from ..support.servers import ADMIN_TOKEN, Server

require_browser()
from playwright.sync_api import Page, expect  # noqa: E402

# A Standard Webhooks secret: whsec_ and the base64 of 24 bytes.
SECRET = "whsec_cGFuZWwtbWVyY2hhbnQtc2VjcmV0LTAxMg=="

RECEIVER_SECRET = SECRET


def SERVER_ENV(request: pytest.FixtureRequest) -> dict[str, str]:
    receiver: Receiver = request.getfixturevalue("receiver")
    return {
        "PAYLIVE_MERCHANT_WEBHOOK_URL": receiver.url,
        "PAYLIVE_MERCHANT_WEBHOOK_SECRET": SECRET,
        "PAYLIVE_MERCHANT_RETRY_MS": "50",
        "PAYLIVE_MERCHANT_RETRY_FOR_MS": "500",
    }


def deliveries(server: Server) -> list[dict[str, Any]]:
    reply = httpx.get(f"{server.url}/api/admin/deliveries", headers=admin())
    return reply.json()["deliveries"]  # type: ignore[no-any-return]


def test_failed_webhook_is_sent_again_from_the_dashboard(
    page: Page, server: Server, receiver: Receiver
) -> None:
    receiver.set(fail=10_000, status=500)
    created = httpx.post(
        f"{server.url}/api/sessions",
        json={"order_id": "order-panel-7", "amount": 1250, "currency": "EUR"},
        headers=merchant(),
    ).json()
    httpx.post(f"{server.url}/api/sessions/{created['id']}/cancel", headers=merchant())
    # Given up before the page opens, so that its first look shows it (then every 5 s).
    deadline = time.monotonic() + 10
    while not any(d["status"] == "failed" for d in deliveries(server)):
        assert time.monotonic() < deadline, "not given up within 10 s"
        time.sleep(0.05)

    page.goto(f"{server.url}/admin#token={ADMIN_TOKEN}")
    row = page.locator("#deliveries-body tr", has_text=created["id"])
    expect(row.locator(".status-pill")).to_have_text("failed", timeout=10_000)
    expect(row).to_contain_text("HTTP 500")

    receiver.set(fail=0)
    row.get_by_role("button", name="Send again").click()
    expect(row.locator(".status-pill")).to_have_text("delivered", timeout=6_000)
    assert [e["id"] for e in receiver.seen()["processed"]] == [
        f"evt_{created['id'].removeprefix('ps_')}_1_cancelled"
    ]

    page.fill("#q-ref", "order-panel-7")
    page.select_option("#q-status", "cancelled")
    page.get_by_role("button", name="Search").click()
    found = page.locator("#search-body tr")
    expect(found).to_have_count(1)
    expect(found).to_contain_text(created["id"])
    expect(found).to_contain_text("12.50")
    page.fill("#q-ref", "order-nobody-has")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#search-note")).to_have_text("Nothing found.")
