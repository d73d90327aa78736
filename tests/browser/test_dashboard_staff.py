"""The dashboard for named staff, in Chromium against a real server: a page opened
after traffic shows it in its chart (the server's counts), a viewer sees no action,
and an operator refunds from the drill-down and finds it in the timeline and the
audit trail with their name; staff page through the audit trail and back, the panel's
refresh keeping their page, and back to the newest past new actions without skipping
one (docs/protocol.md sections 7 and 8). That every column of the trail can be
scrolled to on a phone is checked with the dashboard's other tables, in
test_shop_panels.py."""

from __future__ import annotations

import re
import time

import httpx

from ..support.browser import require_browser
from ..support.servers import ADMIN_TOKEN

require_browser()
from playwright.sync_api import Page, Route, expect  # noqa: E402

VIEWER = "viewer-token-0123456789"
OPERATOR = "operator-token-0123456789"

SERVER_ENV = {"PAYLIVE_STAFF_TOKENS": f"vera:viewer:{VIEWER},otto:operator:{OPERATOR}"}
OK = "4242424242424242"
DECLINED = "4000000000000002"

# Whether an element is announced, and how: its live region's politeness, or None.
LIVE_REGION = """(id) => {
  const live = document.getElementById(id).closest('[aria-live], [role=status], [role=log]');
  return live ? (live.getAttribute('aria-live') ?? 'polite') : null;
}"""
# Resolves once the page has drawn twice: what a finished request led to is on screen.
TWO_FRAMES = "() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"


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
    # The drill-down reads the session when it opens and every 3 s: on a loaded machine
    # (a fresh-clone CI run, once) its reads showed the paid session unpaid for 5 s.
    expect(page.locator("#drill-facts")).to_contain_text("succeeded", timeout=10_000)
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


AUDIT_PAGE = 3  # entries on a page of the audit panel: its limit=100, made small on the way


def small_audit_pages(page: Page) -> list[str]:
    """Ask the audit trail AUDIT_PAGE entries at a time; the queries the page sent."""
    asked: list[str] = []

    def shrink(route: Route) -> None:
        url = route.request.url
        asked.append(url)
        # A page, or whether anything stands past one (a single entry).
        assert "limit=100" in url or "limit=1&" in url or url.endswith("limit=1"), url
        route.continue_(url=url.replace("limit=100", f"limit={AUDIT_PAGE}"))

    page.route(re.compile(r"/api/admin/audit\?"), shrink)
    return asked


def switch_sandbox(server: str) -> None:
    """An action of the admin: the sandbox's outage switch (an entry of the trail)."""
    reply = httpx.post(
        f"{server}/api/admin/sandbox/outage",
        json={"seconds": 0},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert reply.status_code == 200, reply.text


def audit_ids(server: str, staff: str) -> list[str]:
    reply = httpx.get(
        f"{server}/api/admin/audit",
        params={"staff": staff, "limit": "500"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    return [e["id"] for e in reply.json()["entries"]]


SHOWN = "rows => rows.map((row) => row.dataset.audit)"


def test_staff_page_through_the_audit_trail_and_the_refresh_keeps_the_place(
    page: Page, server_url: str, api: httpx.Client
) -> None:
    paid = pay(api, OK)
    for n in range(7):  # seven actions of the admin; three of otto's among them
        switch_sandbox(server_url)
        if n % 3 == 0:
            refunded = httpx.post(
                f"{server_url}/api/sessions/{paid}/refunds",
                json={"amount": 100, "reason": f"part {n}"},
                headers={"Authorization": f"Bearer {OPERATOR}"},
            )
            assert refunded.status_code == 202, refunded.text
    trail = audit_ids(server_url, "admin")
    assert len(trail) == 7

    open_dashboard(page, server_url, ADMIN_TOKEN)
    asked = small_audit_pages(page)
    page.fill("#audit-staff", "admin")
    page.locator("#audit-form button[type=submit]").click()
    card = page.locator("#audit-card")
    older = card.get_by_role("button", name="Older actions")
    newer = card.get_by_role("button", name="Newer actions")
    newest = card.get_by_role("button", name="Newest actions")
    where = page.locator("#audit-page")
    rows = page.locator("#audit-body tr")

    expect(where).to_have_text("Page 1 · entries 1–3")
    assert rows.evaluate_all(SHOWN) == trail[:3]
    expect(older).to_be_enabled()
    expect(newer).to_be_disabled()
    expect(newest).to_be_disabled()
    assert page.evaluate(LIVE_REGION, "audit-page") == "polite"

    older.focus()
    page.keyboard.press("Enter")
    expect(where).to_have_text("Page 2 · entries 4–6")
    assert rows.evaluate_all(SHOWN) == trail[3:6]
    expect(older).to_be_focused()
    expect(newer).to_be_enabled()
    assert all(
        text.startswith("admin (admin)")
        for text in rows.locator("td:nth-child(2)").all_inner_texts()
    )
    # The same filter, after the last entry of page 1 (its place, <at>:<id>).
    assert "staff=admin" in asked[-1] and f"%3A{trail[2]}" in asked[-1], asked[-1]

    # A new action, then the panel's periodic refresh: still page 2, the same entries.
    switch_sandbox(server_url)
    with page.expect_request_finished(lambda r: "/api/admin/audit?" in r.url, timeout=10_000):
        pass
    page.evaluate(TWO_FRAMES)
    assert "before=" in asked[-1] and "staff=admin" in asked[-1], asked[-1]
    expect(where).to_have_text("Page 2 · entries 4–6")
    assert rows.evaluate_all(SHOWN) == trail[3:6]

    page.keyboard.press("Enter")  # Older, still focused: the last page
    expect(where).to_have_text("Page 3 · entry 7 · nothing older")
    assert rows.evaluate_all(SHOWN) == trail[6:]
    expect(older).to_be_disabled()
    expect(newer).to_be_focused()  # the focus is not lost with the button

    page.keyboard.press("Enter")  # Newer: page 2 again, the same entries
    expect(where).to_have_text("Page 2 · entries 4–6")
    assert rows.evaluate_all(SHOWN) == trail[3:6]
    expect(newer).to_be_focused()

    newest.click()  # the newest, with the new action on top
    now = audit_ids(server_url, "admin")
    assert now[1:] == trail
    expect(where).to_have_text("Page 1 · entries 1–3")
    assert rows.evaluate_all(SHOWN) == now[:3]
    expect(newer).to_be_disabled()
    expect(older).to_be_focused()

    # Older follows the page shown: it neither skips nor repeats an entry.
    page.keyboard.press("Enter")
    expect(where).to_have_text("Page 2 · entries 4–6")
    assert rows.evaluate_all(SHOWN) == now[3:6]


def test_newer_after_new_actions_skips_none_of_them(
    page: Page, server_url: str, api: httpx.Client
) -> None:
    # Newer once went back to the page read before, and from the second page to the
    # newest: the actions between that page and the newest page were on neither.
    for _ in range(7):
        switch_sandbox(server_url)
    trail = audit_ids(server_url, "admin")
    open_dashboard(page, server_url, ADMIN_TOKEN)
    asked = small_audit_pages(page)
    page.fill("#audit-staff", "admin")
    page.locator("#audit-form button[type=submit]").click()
    card = page.locator("#audit-card")
    older = card.get_by_role("button", name="Older actions")
    newer = card.get_by_role("button", name="Newer actions")
    where = page.locator("#audit-page")
    rows = page.locator("#audit-body tr")
    expect(where).to_have_text("Page 1 · entries 1–3")
    older.click()
    expect(where).to_have_text("Page 2 · entries 4–6")
    older.click()
    expect(where).to_have_text(re.compile(r"^Page 3 · entr"))
    pages = [rows.evaluate_all(SHOWN)]
    assert pages[0][0] == trail[6]

    for _ in range(AUDIT_PAGE + 1):  # more new actions than a page holds
        switch_sandbox(server_url)
    now = audit_ids(server_url, "admin")
    assert now[AUDIT_PAGE + 1 :] == trail
    while newer.is_enabled():
        shown = pages[-1]
        newer.click()
        page.wait_for_function(
            "(first) => document.querySelector('#audit-body tr')?.dataset.audit !== first",
            arg=shown[0],
        )
        page.evaluate(TWO_FRAMES)
        pages.append(rows.evaluate_all(SHOWN))
        assert len(pages) < 10, pages
    # Each page read on from the one before: its oldest entry is at most the one just
    # newer than the first entry of the page before (an entry past it would be skipped).
    for before, after in zip(pages, pages[1:], strict=False):
        assert now.index(after[-1]) >= now.index(before[0]) - 1, (before, after, now)
    assert set(now[: now.index(trail[6]) + 1]) <= {i for p in pages for i in p}
    assert pages[-1] == now[:AUDIT_PAGE]
    expect(where).to_have_text("Page 1 · entries 1–3")
    assert any("after=" in url for url in asked), asked


def open_drill(page: Page, session_id: str) -> None:
    page.fill("#search", session_id)
    page.locator(f"tr[data-session-id='{session_id}'] button[data-open]").click()
    expect(page.locator("#drill-facts")).to_contain_text("succeeded", timeout=10_000)
    expect(page.locator("#refund-form")).to_be_visible()


def refunds_of(api: httpx.Client, session_id: str) -> list[dict[str, object]]:
    refunds: list[dict[str, object]] = api.get(f"/api/sessions/{session_id}").json()["refunds"]
    return refunds


PROXY_502 = {"status": 502, "content_type": "text/html", "body": "<h1>502 Bad Gateway</h1>"}


def test_a_refund_whose_answer_a_proxy_lost_is_sent_again_with_its_key_and_made_once(
    page: Page, server_url: str, api: httpx.Client
) -> None:
    # paylive makes the refund; its answer is replaced by a proxy's 502 on its way back.
    # Before, the drill-down showed an error (one request, never sent again), inviting a
    # second click: a second refund. Now the same request goes again with the same key
    # and paylive answers with the refund it made; a second submit while the first is
    # in flight sends nothing.
    open_dashboard(page, server_url, OPERATOR)
    paid = pay(api, OK)
    open_drill(page, paid)
    held: list[Route] = []
    keys: list[str | None] = []

    def hold_the_first(route: Route) -> None:
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) == 1:
            held.append(route)  # answered below, once the form was submitted again
        else:
            route.continue_()

    page.route(re.compile(r"/api/sessions/[^/]+/refunds$"), hold_the_first)
    page.fill("#refund-amount", "1000")
    page.fill("#refund-reason", "one item returned")
    page.click("#refund-submit")
    page.wait_for_function("() => document.getElementById('refund-submit').disabled")
    assert len(held) == 1
    # A second submit while the refund is in flight (the button is disabled; Enter in a
    # field, or a script, still submits the form).
    page.locator("#refund-form").evaluate("(form) => form.requestSubmit()")
    held[0].fetch()  # paylive has it, and refunds
    held[0].fulfill(**PROXY_502)
    # Done once answered (the form is emptied), not before: the drill-down may show
    # the refund from the feed while the answer is still being asked for again.
    expect(page.locator("#refund-amount")).to_have_value("", timeout=10_000)
    expect(page.locator("#refund-error")).to_be_empty()
    expect(page.locator("#drill-refunded")).to_contain_text("refunded")
    assert len(keys) == 2 and keys[0] and keys[1] == keys[0], keys
    refunds = refunds_of(api, paid)
    assert [r["amount"] for r in refunds] == [1000], refunds
    assert api.get(f"/api/sessions/{paid}").json()["amount_refunded"] == 1000


def test_a_refund_whose_answers_are_all_lost_is_not_known_and_sent_again_with_its_key(
    page: Page, server_url: str, api: httpx.Client
) -> None:
    # Every answer lost: after its resends the refund is shown as not known (not as a
    # failure to try again), and pressed again, the same refund goes with the same key:
    # paylive answers with the one refund it made.
    open_dashboard(page, server_url, OPERATOR)
    paid = pay(api, OK)
    open_drill(page, paid)
    keys: list[str | None] = []

    def lose_every_answer(route: Route) -> None:
        keys.append(route.request.headers.get("idempotency-key"))
        route.fetch()
        route.fulfill(**PROXY_502)

    page.route(re.compile(r"/api/sessions/[^/]+/refunds$"), lose_every_answer)
    page.fill("#refund-amount", "700")
    page.click("#refund-submit")
    error = page.locator("#refund-error")
    expect(error).to_contain_text("Not known whether it was done", timeout=10_000)
    expect(error).to_contain_text("check the session")
    expect(error).to_have_attribute("data-outcome", "unknown")
    assert len(keys) == 3 and keys[0] and set(keys) == {keys[0]}, keys  # sent, then twice again
    assert [r["amount"] for r in refunds_of(api, paid)] == [700]

    page.unroute(re.compile(r"/api/sessions/[^/]+/refunds$"))
    again: list[str | None] = []

    def count(route: Route) -> None:
        again.append(route.request.headers.get("idempotency-key"))
        route.continue_()

    page.route(re.compile(r"/api/sessions/[^/]+/refunds$"), count)
    expect(page.locator("#refund-amount")).to_have_value("700")
    page.click("#refund-submit")
    expect(page.locator("#refund-amount")).to_have_value("")
    expect(error).to_be_empty()
    expect(page.locator("#drill-refunded")).to_contain_text("refunded")
    assert again == [keys[0]], again
    assert [r["amount"] for r in refunds_of(api, paid)] == [700]


def test_a_refund_still_running_for_one_session_leaves_the_next_ones_form_alone(
    page: Page, server_url: str, api: httpx.Client
) -> None:
    # A refund of one session is on its way when staff close the drill-down and open
    # another: before, that one's Refund button was still disabled by the first, and
    # the first's end enabled it again while that one's own refund was on its way.
    open_dashboard(page, server_url, OPERATOR)
    first, second = pay(api, OK), pay(api, OK)
    held: dict[str, Route] = {}

    def hold(route: Route) -> None:
        held[route.request.url.split("/")[-2]] = route

    page.route(re.compile(r"/api/sessions/[^/]+/refunds$"), hold)
    open_drill(page, first)
    page.fill("#refund-amount", "300")
    page.click("#refund-submit")
    page.wait_for_function("() => document.getElementById('refund-submit').disabled")
    assert list(held) == [first]
    page.click("#drill-close")
    open_drill(page, second)
    expect(page.locator("#drill-id")).to_have_text(second)
    expect(page.locator("#refund-submit")).to_be_enabled()
    page.fill("#refund-amount", "400")
    page.click("#refund-submit")
    page.wait_for_function("() => document.getElementById('refund-submit').disabled")
    assert list(held) == [first, second]
    # The first's answer comes while the second's is on its way: it changes nothing here.
    with page.expect_response(lambda r: first in r.url and r.url.endswith("/refunds")):
        held[first].continue_()
    page.evaluate(TWO_FRAMES)
    expect(page.locator("#refund-submit")).to_be_disabled()
    expect(page.locator("#refund-error")).to_be_empty()
    held[second].continue_()
    expect(page.locator("#refund-amount")).to_have_value("", timeout=10_000)
    expect(page.locator("#refund-submit")).to_be_enabled()
    assert [r["amount"] for r in refunds_of(api, first)] == [300]
    assert [r["amount"] for r in refunds_of(api, second)] == [400]
