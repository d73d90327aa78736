"""The outcome receipt (docs/protocol.md section 10) with the demo checkout in
headless Chromium, a real server and a real webhook receiver: a checkout that drew
its outcome acknowledges it (``outcome_seen_at`` set, no ``session.outcome_unseen``);
one closed before its outcome makes exactly one ``session.outcome_unseen`` webhook
after the bound, and a late acknowledgement is still recorded."""

from __future__ import annotations

import base64
import time
from typing import Any

import httpx
import pytest

from ..support.browser import require_browser
from ..support.receiver import Receiver
from ..support.servers import ADMIN_TOKEN

require_browser()
from playwright.sync_api import Page, expect  # noqa: E402

from .test_browser import OK_CARD, open_demo, wait_server_status  # noqa: E402

# A page acknowledges its outcome within a few hundred ms of drawing it, on a loaded
# machine too; each test then waits past the bound once more to see nothing else come.
UNSEEN_MS = 1000
# Past the bound, the timer loop's round (50 ms) and a webhook's way to the shop.
SETTLE_S = 1.0
SANDBOX_DELAY_MS = 1200  # long enough to close the page while the payment processes
SECRET = "whsec_" + base64.b64encode(b"receipt-merchant-secret-0123").decode()

RECEIVER_SECRET = SECRET


def SERVER_ENV(request: pytest.FixtureRequest) -> dict[str, str]:
    receiver: Receiver = request.getfixturevalue("receiver")
    return {
        "PAYLIVE_OUTCOME_UNSEEN_MS": str(UNSEEN_MS),
        "PAYLIVE_SANDBOX_DELAY_MS": str(SANDBOX_DELAY_MS),
        "PAYLIVE_ATTEMPT_TIMEOUT_MS": "5000",
        "PAYLIVE_MERCHANT_WEBHOOK_URL": receiver.url,
        "PAYLIVE_MERCHANT_WEBHOOK_SECRET": SECRET,
    }


def unseen(receiver: Receiver, session_id: str) -> list[dict[str, Any]]:
    """Every ``session.outcome_unseen`` webhook that reached the shop for the session
    (arrivals, not de-duplicated: a second one would show)."""
    return [
        a
        for a in receiver.seen()["arrivals"]
        if a.get("session") == session_id and a.get("type") == "session.outcome_unseen"
    ]


def until_past(ms: int) -> None:
    """Sleep until the wall clock (the server's: same machine) is past ``ms`` since the
    epoch plus ``SETTLE_S``: the window in which something that must not come would have."""
    time.sleep(max(0.0, ms / 1000 + SETTLE_S - time.time()))


def wait_for(check: Any, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.05)


def test_a_checkout_that_drew_its_outcome_acknowledges_it(
    page: Page, server_url: str, api: httpx.Client, receiver: Receiver
) -> None:
    # Staff watch the dashboard while the customer pays.
    dashboard = page.context.new_page()
    dashboard.goto(f"{server_url}/client/admin.html#token={ADMIN_TOKEN}")
    session_id = open_demo(page, server_url)
    page.fill("#card", OK_CARD)
    page.click("#pay")
    expect(page.locator("#final-title")).to_have_text("Payment succeeded")
    seen = wait_for(lambda: api.get(f"/api/sessions/{session_id}").json().get("outcome_seen_at"), 5)
    session = api.get(f"/api/sessions/{session_id}").json()
    assert session["status"] == "succeeded" and session["outcome_seen_at"] == seen
    assert seen >= session["attempts"][0]["ended_at"]
    # The dashboard shows it, live.
    row = dashboard.locator(f'tr[data-session-id="{session_id}"]')
    expect(row).to_have_attribute("data-outcome-seen", "yes")
    row.locator("button[data-open]").click()
    expect(dashboard.locator("#drill-seen")).to_have_attribute("data-seen", "yes")
    # Past the bound (and the timer loop's round), the shop heard of the success and
    # of nothing unseen.
    wait_for(
        lambda: any(
            a.get("session") == session_id and a.get("type") == "session.succeeded"
            for a in receiver.seen()["arrivals"]
        ),
        10,
    )
    until_past(session["attempts"][0]["ended_at"] + UNSEEN_MS)
    assert unseen(receiver, session_id) == []


def test_a_checkout_closed_before_its_outcome_makes_one_outcome_unseen(
    page: Page, server_url: str, api: httpx.Client, receiver: Receiver
) -> None:
    session_id = open_demo(page, server_url)
    page.fill("#card", OK_CARD)
    page.click("#pay")
    expect(page.locator("#status")).to_have_attribute("data-status", "processing")
    page.close()  # the tab is gone before the provider answers
    ended = wait_server_status(api, session_id, "succeeded")
    assert ended["outcome_seen_at"] is None
    arrived = wait_for(lambda: unseen(receiver, session_id), (UNSEEN_MS + 8000) / 1000)
    assert len(arrived) == 1
    event = next(
        e
        for e in receiver.seen()["processed"]
        if e["session"]["id"] == session_id and e["type"] == "session.outcome_unseen"
    )
    assert event["cause"] == "outcome_unseen" and event["previous"] == "succeeded"
    assert event["session"]["status"] == "succeeded"
    assert event["created"] >= ended["updated_at"] + UNSEEN_MS
    # Once: the timer is not due again.
    until_past(event["created"] + UNSEEN_MS)
    assert len(unseen(receiver, session_id)) == 1
    # The customer comes back later (another tab): the acknowledgement is recorded too.
    late = api.post(f"/api/sessions/{session_id}/seen", json={"status": "succeeded"})
    assert late.status_code == 200, late.text
    assert late.json()["outcome_seen_at"] >= event["created"]
    wrong = api.post(f"/api/sessions/{session_id}/seen", json={"status": "failed"})
    assert wrong.status_code == 409 and wrong.json()["error"]["code"] == "invalid_state"
    bad = api.post(f"/api/sessions/{session_id}/seen", json={"status": "processing"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_field"
    assert len(unseen(receiver, session_id)) == 1
