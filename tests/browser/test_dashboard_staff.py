"""The dashboard for named staff, in Chromium against a real server: a page opened
after traffic shows it in its chart (the server's counts), a viewer sees no action,
and an operator refunds from the drill-down and finds it in the timeline and the
audit trail with their name (docs/protocol.md sections 7 and 8)."""

from __future__ import annotations

import re
import time

import httpx

from ..support.browser import require_browser

require_browser()
from playwright.sync_api import Page, expect  # noqa: E402

VIEWER = "viewer-token-0123456789"
OPERATOR = "operator-token-0123456789"

SERVER_ENV = {"PAYLIVE_STAFF_TOKENS": f"vera:viewer:{VIEWER},otto:operator:{OPERATOR}"}
OK = "4242424242424242"
DECLINED = "4000000000000002"


def pay(api: httpx.Client, card: str, amount: int = 2500) -> str:
    body = {"order_id": f"order-staff-{time.monotonic_ns()}", "amount": amount, "currency": "EUR"}
    created = api.post("/api/sessions", json=body)
    assert created.status_code == 201, created.text
    session_id = str(created.json()["id"])
    paying = api.post(
        f"/api/sessions/{session_id}/attempts", json={"payment_method": {"card": card}}
    )
    assert paying.status_code == 202, paying.text
    deadline = time.monotonic() + 10
    while api.get(f"/api/sessions/{session_id}").json()["status"] == "processing":
        assert time.monotonic() < deadline, "no result from the sandbox"
        time.sleep(0.05)
    return session_id


def open_dashboard(page: Page, server: str, token: str) -> None:
    page.goto(f"{server}/admin#token={token}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")


def test_a_page_opened_after_traffic_shows_it_and_a_viewer_sees_no_action(
    page: Page, server_url: str, api: httpx.Client
) -> None:
    pay(api, OK)
    pay(api, DECLINED)  # an interruption
    # Opened after the traffic: only the server can know of it.
    open_dashboard(page, server_url, VIEWER)
    expect(page.locator("#whoami")).to_have_text("vera · viewer")
    # The hour's busiest minute, not the last one: the traffic may sit in the minute
    # before the page opened.
    expect(page.locator("#chart-desc")).to_contain_text(
        re.compile(r"at most [1-9][0-9]* changes a minute this hour")
    )
    totals = page.evaluate(
        """() => {
          const s = window.__paylive_dashboard.counts.series(Date.now());
          return [s.changes.reduce((a, b) => a + b, 0), s.interruptions.reduce((a, b) => a + b, 0)];
        }"""
    )
    assert totals[0] >= 4 and totals[1] >= 1, totals  # attempt_started and the outcome, twice
    assert int(page.locator("#chart-top").inner_text()) >= 1

    paid = pay(api, OK)  # after opening: the feed brings it to the table
    page.fill("#search", paid)
    page.locator(f"tr[data-session-id='{paid}'] button[data-open]").click()
    expect(page.locator("#drill")).to_be_visible()
    expect(page.locator("#drill-refunded")).to_have_text("Nothing refunded.")
    expect(page.locator("#refund-form")).to_be_hidden()
    expect(page.locator("#done-by-hand")).to_be_hidden()
    expect(page.locator("#audit-card")).to_be_visible()


def test_an_operator_refunds_from_the_drill_down_and_is_in_the_audit_trail(
    page: Page, server_url: str, api: httpx.Client
) -> None:
    open_dashboard(page, server_url, OPERATOR)
    expect(page.locator("#whoami")).to_have_text("otto · operator")
    paid = pay(api, OK)
    page.fill("#search", paid)
    page.locator(f"tr[data-session-id='{paid}'] button[data-open]").click()
    expect(page.locator("#refund-form")).to_be_visible()
    page.fill("#refund-amount", "9999")
    page.click("#refund-submit")
    expect(page.locator("#refund-error")).to_contain_text("at most 2500")
    page.fill("#refund-amount", "1000")
    page.fill("#refund-reason", "one item returned")
    page.click("#refund-submit")
    expect(page.locator("#drill-refunded")).to_contain_text("refunded", timeout=10_000)
    expect(page.locator("#drill-refunded")).to_contain_text("done", timeout=10_000)
    audit = page.locator("#drill-timeline li[data-audit='refund']")
    expect(audit).to_have_count(1)
    expect(audit).to_contain_text("by otto (operator)")
    expect(audit).to_contain_text("one item returned")
    expect(page.locator("#drill-timeline li[data-cause='refund_requested']")).to_have_count(1)
    page.keyboard.press("Escape")
    page.fill("#audit-staff", "otto")
    page.locator("#audit-form button[type=submit]").click()
    row = page.locator("#audit-body tr").first
    expect(row).to_contain_text("otto (operator)")
    expect(row).to_contain_text(paid)
    got = api.get(f"/api/sessions/{paid}").json()
    assert got["amount_refunded"] == 1000
