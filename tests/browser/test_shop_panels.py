"""The dashboard's shop panels in headless Chromium: a webhook that failed for good is
shown and sent again from its row; a search finds a session by its order id. On a
phone every table of the dashboard, each with rows, scrolls sideways in its card to
its last column (here, where the webhooks have a shop to go to)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from ..support.browser import axe_script, require_browser
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


PHONE = {"width": 390, "height": 844}
# Why the table ``id`` cannot be read whole at any sideways scroll, or null: a box inside
# its card scrolls it sideways, a region a keyboard can reach and that has a name; every
# header cell lies within what that box can show, the box within the card and the
# screen, the card itself does not scroll sideways, and the last column, scrolled to,
# is within the box and hidden by nothing. With whether the table is wider than its box
# (the check is then not met by chance).
TABLE_UNREACHABLE = """(id) => {
  const table = document.getElementById(id);
  const card = table.closest('.card');
  let box = table.parentElement;
  while (box !== card && !['auto', 'scroll'].includes(getComputedStyle(box).overflowX)) {
    box = box.parentElement;
  }
  const wide = table.offsetWidth > box.clientWidth;
  const found = (problem) => ({ problem, wide });
  if (box === card) return found('no box in the card scrolls the table sideways');
  if (box.tabIndex !== 0) return found('a keyboard cannot reach the box that scrolls it');
  const name = box.getAttribute('aria-label') || box.getAttribute('aria-labelledby');
  if (box.getAttribute('role') !== 'region' || !name) return found('the box is no named region');
  // Only the box: what escapes it (an absolute label in a cell) made the card scroll.
  if (card.scrollWidth > card.clientWidth + 1) return found('the card itself scrolls sideways');
  const thead = table.querySelector('thead');
  thead.scrollIntoView({ block: 'center', inline: 'start' });
  const seen = box.getBoundingClientRect(), frame = card.getBoundingClientRect();
  if (seen.left < Math.max(0, frame.left) - 1 || seen.right > Math.min(innerWidth, frame.right) + 1) {
    return found('the box is wider than its card or the screen');
  }
  box.scrollLeft = 0;
  const start = seen.left + box.clientLeft; // inside the box's border
  const cells = [...thead.querySelectorAll('th')];
  for (const th of cells) {
    const r = th.getBoundingClientRect();
    if (r.left - start < -1 || r.right - start > box.scrollWidth + 1) {
      return found(`${th.textContent || 'the last column'} is past the box`);
    }
  }
  box.scrollLeft = box.scrollWidth;
  const last = cells.at(-1).getBoundingClientRect();
  if (last.right > seen.right + 1) return found('the last column is past the box, scrolled to');
  const hit = document.elementFromPoint((last.left + last.right) / 2, (last.top + last.bottom) / 2);
  if (!cells.at(-1).contains(hit)) return found('the last column, scrolled to, is covered');
  return found(null);
}"""
PAGE_SCROLLS_SIDEWAYS = "() => document.documentElement.scrollWidth > innerWidth"
AXE_SCROLLABLE_REGIONS = """async () => (await axe.run(document, {
  runOnly: ['scrollable-region-focusable'], resultTypes: ['violations'],
})).violations.flatMap((v) => v.nodes.map((n) => n.target.join(' ')))"""


def test_on_a_phone_every_table_of_the_dashboard_can_be_scrolled_to_its_last_column(
    page: Page, server: Server
) -> None:
    # A card hides what overflows it: on a phone the right-hand columns of the search
    # results and of the webhooks were cut off, with no way to reach them. Each table
    # is given rows: a session paid and partly refunded after the page opened (the
    # sessions table, its webhooks, an action of the audit trail, its drill-down's
    # attempt and gateway effect), found by the search. After the test above, whose
    # receiver must have seen only its own webhook.
    page.set_viewport_size(PHONE)
    page.goto(f"{server.url}/admin#token={ADMIN_TOKEN}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    order = f"order-phone-{time.monotonic_ns()}"
    created = httpx.post(
        f"{server.url}/api/sessions",
        json={"order_id": order, "amount": 4200, "currency": "EUR"},
        headers=merchant(),
    ).json()
    paid = httpx.post(
        f"{server.url}/api/sessions/{created['id']}/attempts",
        json={"payment_method": {"card": "4242424242424242"}},
        headers=merchant(),
    )
    assert paid.status_code == 202, paid.text
    row = page.locator(f"tr[data-session-id='{created['id']}']")
    expect(row).to_have_attribute("data-status", "succeeded", timeout=10_000)
    refunded = httpx.post(
        f"{server.url}/api/sessions/{created['id']}/refunds",
        json={"amount": 1000, "reason": "one item returned"},
        headers=admin(),
    )
    assert refunded.status_code == 202, refunded.text

    page.fill("#q-ref", order)
    page.get_by_role("button", name="Search").click()
    page.locator("#audit-form button[type=submit]").click()
    expect(page.locator("#search-body tr")).to_have_count(1)
    expect(page.locator("#audit-body tr").first).to_be_visible()
    # The panel reads the webhooks every 5 s.
    expect(page.locator("#deliveries-body tr", has_text=created["id"]).first).to_be_visible(
        timeout=10_000
    )
    tables = ["sessions", "search-results", "audit", "deliveries"]
    found = {table: page.evaluate(TABLE_UNREACHABLE, table) for table in tables}
    sideways = page.evaluate(PAGE_SCROLLS_SIDEWAYS)

    row.locator("button[data-open]").click()
    expect(page.locator("#drill-attempts-body tr")).to_have_count(1)
    expect(page.locator("#drill-effects-body tr").first).to_be_visible()
    for table in ("drill-effects", "drill-attempts"):
        found[table] = page.evaluate(TABLE_UNREACHABLE, table)
    page.add_script_tag(path=str(axe_script()))
    unfocusable = page.evaluate(AXE_SCROLLABLE_REGIONS)

    problems = {table: seen["problem"] for table, seen in found.items() if seen["problem"]}
    assert problems == {}, problems
    # Not by chance: at this width each table is wider than its box.
    assert [table for table, seen in found.items() if not seen["wide"]] == [], found
    assert not sideways, "the page scrolls sideways"
    assert unfocusable == [], unfocusable
