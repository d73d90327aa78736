"""The real ``client/`` code in headless Chromium against a real ``paylive serve``.

The module starts its own server on a free port of 127.0.0.1 with short timings, and
drives the demo checkout page and the admin dashboard with Playwright (sync API) on
Debian's Chromium. Every wait is bounded; nothing sleeps for long.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from ..support.browser import require_browser
from ..support.servers import ADMIN_TOKEN

require_browser()
from playwright.sync_api import Page, expect  # noqa: E402

ATTEMPT_TIMEOUT_MS = 1500
RETRY_DELAY_MS = 600
SANDBOX_DELAY_MS = 200
COUNTDOWN_INTERVAL_MS = 200

SERVER_ENV = {
    "PAYLIVE_ATTEMPT_TIMEOUT_MS": str(ATTEMPT_TIMEOUT_MS),
    "PAYLIVE_RETRY_DELAY_MS": str(RETRY_DELAY_MS),
    "PAYLIVE_SANDBOX_DELAY_MS": str(SANDBOX_DELAY_MS),
    "PAYLIVE_COUNTDOWN_INTERVAL_MS": str(COUNTDOWN_INTERVAL_MS),
}

OK_CARD = "4242424242424242"
TIMEOUT_CARD = "4000000000000408"

WAIT_MS = 5000  # the longest any single expectation may take


def create_session(api: httpx.Client, amount: int = 1999) -> dict[str, Any]:
    order = f"order-{time.monotonic_ns()}"
    body = {"order_id": order, "amount": amount, "currency": "EUR"}
    response = api.post("/api/sessions", json=body)
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


def open_demo(page: Page, server: str) -> str:
    """Open /demo (it creates a session and redirects); return the session id."""
    page.goto(f"{server}/demo")
    expect(page.locator("#status")).to_have_attribute("data-status", "created")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    fragment = parse_qs(urlsplit(page.url).fragment)
    session_id = fragment["session"][0]
    assert session_id.startswith("ps_")
    return session_id


def wait_server_status(api: httpx.Client, session_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        session: dict[str, Any] = api.get(f"/api/sessions/{session_id}").json()
        if session.get("status") == status:
            return session
        assert time.monotonic() < deadline, f"server never reached {status}: {session}"
        time.sleep(0.05)


def wait_seen(api: httpx.Client, session_id: str) -> dict[str, Any]:
    """The session once the page has acknowledged its outcome (protocol 10)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        session: dict[str, Any] = api.get(f"/api/sessions/{session_id}").json()
        if session.get("outcome_seen_at"):
            return session
        assert time.monotonic() < deadline, f"the outcome was never acknowledged: {session}"
        time.sleep(0.05)


RECORD_DURABLE = """() => {
  window.__durable = [];
  window.__snapshots = 0;
  window.__paylive.on('message', (m) => {
    if (m.type === 'state' || m.type === 'retry_prompt') {
      window.__durable.push([m.seq, m.type, m.data.cause ?? null]);
    }
    if (m.type === 'snapshot') window.__snapshots += 1;
  });
}"""


def test_happy_path(page: Page, server_url: str) -> None:
    open_demo(page, server_url)
    expect(page.locator("#amount")).to_contain_text("19.99")
    expect(page.locator("#card")).to_have_value(OK_CARD)
    expect(page.locator("#test-cards button")).to_have_count(9)

    page.click("#pay")
    expect(page.locator("#status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#final")).to_be_visible()
    expect(page.locator("#final-title")).to_have_text("Payment succeeded")
    expect(page.locator("#attempt")).to_have_text("Attempt 1 of 3")
    expect(page.locator("#pay-form")).to_be_hidden()
    assert page.evaluate("window.__paylive.guardActive") is False


def test_timeout_then_retry_without_double_charge(page: Page, server_url: str) -> None:
    open_demo(page, server_url)
    page.fill("#card", TIMEOUT_CARD)
    page.click("#pay")
    expect(page.locator("#status")).to_have_attribute("data-status", "processing")
    expect(page.locator("#processing")).to_be_visible()

    # The countdown moves: two different values from the server's countdown messages,
    # the later one smaller, and the local display between them.
    countdown = page.locator("#countdown")
    page.wait_for_function("document.getElementById('countdown').dataset.serverRemainingMs !== ''")
    first = int(countdown.get_attribute("data-server-remaining-ms") or "0")
    page.wait_for_function(
        "(first) => { const v = document.getElementById('countdown').dataset.serverRemainingMs;"
        " return v !== '' && Number(v) < first; }",
        arg=first,
    )
    assert 0 < first <= ATTEMPT_TIMEOUT_MS
    expect(countdown).to_have_text(re.compile(r"^\d+(\.\d)?\s?s left$"))

    # The attempt times out: a retry prompt that says the customer is not charged twice,
    # with the retry button disabled until retry_at.
    seen = page.wait_for_function(
        """() => {
          const s = window.__paylive.session;
          if (!s || s.status !== 'interrupted') return null;
          return { disabled: document.getElementById('retry').disabled,
                   retryIn: window.__paylive.retryInMs(),
                   prompt: window.__paylive.retryPrompt };
        }""",
        polling="raf",
    ).json_value()
    assert seen["prompt"]["outcome_unknown"] is True
    assert seen["prompt"]["reason"] == "timeout"
    if seen["retryIn"] > 0:
        assert seen["disabled"], "retry was enabled before retry_at"
    expect(page.locator("#status")).to_have_attribute("data-status", "interrupted")
    expect(page.locator("#no-double")).to_be_visible()
    expect(page.locator("#no-double")).to_contain_text("You will not be charged twice")
    expect(page.locator("#prompt-text")).to_contain_text("attempt 2 of 3")

    page.fill("#card", OK_CARD)
    expect(page.locator("#retry")).to_be_enabled()
    allowed = page.evaluate("window.__paylive.serverNow() >= window.__paylive.retryPrompt.retry_at")
    assert allowed
    page.click("#retry")
    expect(page.locator("#status")).to_have_attribute("data-status", "succeeded")
    expect(page.locator("#attempt")).to_have_text("Attempt 2 of 3")
    expect(page.locator("#message")).to_have_text("")


def leaving_asks_first(page: Page) -> None:
    """Closing the page asks first (``beforeunload``); dismissing the dialog keeps it."""
    with page.expect_event("dialog") as dialog_info:
        page.close(run_before_unload=True)
    dialog = dialog_info.value
    assert dialog.type == "beforeunload"
    dialog.dismiss()
    assert not page.is_closed()


def test_beforeunload_guard_while_processing(page: Page, server_url: str) -> None:
    open_demo(page, server_url)
    assert page.evaluate("window.__paylive.guardActive") is False
    page.fill("#card", TIMEOUT_CARD)
    page.click("#pay")
    expect(page.locator("#status")).to_have_attribute("data-status", "processing")
    assert page.evaluate("window.__paylive.guardActive") is True
    expect(page.locator("body")).to_have_attribute("data-guard", "on")

    # Leaving now asks first; dismissing the dialog keeps the page.
    leaving_asks_first(page)

    # Once the attempt is over the guard goes away.
    expect(page.locator("#status")).to_have_attribute("data-status", "interrupted")
    expect(page.locator("body")).to_have_attribute("data-guard", "off")
    assert page.evaluate("window.__paylive.guardActive") is False


class PayIntercept:
    """The checkout's socket with its first ``pay`` frame handed to ``on_pay(ws, server,
    frame)`` (which cuts the socket, or answers in the server's place), passed to the
    server first when ``forward``; so are the client's resends of it (the same frame,
    its key, on the next sockets: protocol 4.2) until ``release``, so that its answer
    stays lost; what the server says on the sockets opened after it is held back until
    ``release``, so that the page is seen while it cannot know."""

    def __init__(
        self, page: Page, on_pay: Callable[[Any, Any, dict[str, Any]], None], forward: bool
    ) -> None:
        self._on_pay, self._forward = on_pay, forward
        self.done = False
        self._holding = True
        self._held: list[tuple[Any, str | bytes]] = []
        page.route_web_socket(re.compile(r"/ws/sessions/"), self._route)

    def _route(self, ws: Any) -> None:
        server = ws.connect_to_server()
        later = self.done

        def to_server(message: str | bytes) -> None:
            frame = json.loads(message)
            if frame.get("type") != "pay" or not self._holding:
                server.send(message)
                return
            self.done = True
            if self._forward:
                server.send(message)
            self._on_pay(ws, server, frame)

        def to_page(message: str | bytes) -> None:
            if later and self._holding:
                self._held.append((ws, message))
            else:
                ws.send(message)

        ws.on_message(to_server)
        server.on_message(to_page)

    def release(self) -> None:
        """What the later sockets' server said reaches the page, and from now on at once."""
        self._holding = False
        for ws, message in self._held:
            ws.send(message)


def cut_with(code: int, reason: str) -> Callable[[Any, Any, dict[str, Any]], None]:
    def cut(ws: Any, server: Any, _frame: dict[str, Any]) -> None:
        ws.close(code=code, reason=reason)
        server.close()

    return cut


def answered_engine_unavailable(ws: Any, _server: Any, frame: dict[str, Any]) -> None:
    """The store's answer, as paylive sends it on a socket."""
    error = {
        "code": "engine_unavailable",
        "message": "the session store is unavailable; retry shortly",
    }
    message = {"type": "error", "session": frame.get("session"), "seq": None, "ts": 0}
    ws.send(json.dumps({**message, "data": {**error, "ref": frame["ref"]}}))


def test_beforeunload_guard_holds_while_a_lost_pay_is_unknown(
    page: Page, server_url: str, api: httpx.Client
) -> None:
    """The socket dies right after carrying the pay, before its ack or any state: the
    server may have started the charge, so leaving must still ask until the session,
    heard after the reconnect, says what it is doing."""
    cut = PayIntercept(page, cut_with(1011, "cut after the pay"), forward=True)
    session_id = open_demo(page, server_url)
    page.evaluate(RECORD_DURABLE)
    page.fill("#card", TIMEOUT_CARD)
    page.click("#pay")
    expect(page.locator("#message")).to_contain_text("The connection dropped while sending")
    # The server took the pay (its attempt started); the page heard nothing of it.
    deadline = time.monotonic() + WAIT_MS / 1000
    while api.get(f"/api/sessions/{session_id}").json()["attempt"] != 1:
        assert time.monotonic() < deadline, "the server never took the pay"
        time.sleep(0.05)
    assert page.evaluate("window.__paylive.status") == "created"
    assert page.evaluate("window.__paylive.guardActive") is True
    expect(page.locator("body")).to_have_attribute("data-guard", "on")
    # The page says it is checking, and offers no second pay meanwhile.
    expect(page.locator("#checking")).to_be_visible()
    expect(page.locator("#pay")).to_be_disabled()
    leaving_asks_first(page)

    # The reconnected socket's news reaches the page: a snapshot (it asked for one), the
    # attempt under way or already timed out; the guard goes once the attempt is over.
    cut.release()
    expect(page.locator("#status")).to_have_attribute("data-status", "interrupted")
    expect(page.locator("body")).to_have_attribute("data-guard", "off")
    assert page.evaluate("window.__snapshots") >= 1
    expect(page.locator("#no-double")).to_be_visible()
    expect(page.locator("#checking")).to_be_hidden()
    expect(page.locator("#retry")).to_be_enabled()  # from retry_at on, as the state says


# The form's own submit (Enter in the card field, as a customer would): the pay it
# makes, if any, is waiting in the client's queue once the card is read.
SUBMIT_AND_COUNT_PAYS = """async () => {
  document.getElementById('pay-form').requestSubmit();
  await new Promise((resolve) => setTimeout(resolve, 0));
  return window.__paylive.pendingCommands.filter((c) => c.type === 'pay').length;
}"""


def test_pay_stays_off_while_a_lost_pay_is_checked(page: Page, server_url: str) -> None:
    """The socket dies with the pay on it, before the server has it: until the page
    hears the session again, it cannot know whether a charge started. It says it is
    checking the payment and keeps Pay off (a second pay invites a double click on
    money); the snapshot then says `created`, and Pay is back."""
    cut = PayIntercept(page, cut_with(1011, "cut with the pay"), forward=False)
    open_demo(page, server_url)
    page.fill("#card", OK_CARD)
    page.click("#pay")
    expect(page.locator("#message")).to_contain_text("The connection dropped while sending")
    checking = page.locator("#checking")
    expect(checking).to_be_visible()
    expect(checking).to_contain_text("Checking your payment")
    expect(page.locator("#pay")).to_be_disabled()
    expect(page.locator("#checking-title")).to_be_focused()  # not lost with the disabled Pay
    assert page.evaluate("window.__paylive.outcomeUnknown") is True
    assert page.evaluate(SUBMIT_AND_COUNT_PAYS) == 0

    # The reconnected socket's snapshot: the pay never arrived, the session is ready to pay.
    cut.release()
    expect(checking).to_be_hidden()
    expect(page.locator("#pay")).to_be_enabled()
    expect(page.locator("#pay")).to_be_focused()
    expect(page.locator("#status")).to_have_attribute("data-status", "created")
    assert page.evaluate("window.__paylive.outcomeUnknown") is False


def test_pay_answered_engine_unavailable_is_checked_not_refused(
    page: Page, server_url: str
) -> None:
    """paylive answers `engine_unavailable` when its store did not answer, a save made
    with only its reply lost included (protocol 3.1): the attempt may have started. The
    checkout says it is checking the payment, never that it was refused, and keeps Pay
    off until the session tells (here the pay never reached the store: `created`)."""
    cut = PayIntercept(page, answered_engine_unavailable, forward=False)
    open_demo(page, server_url)
    page.fill("#card", OK_CARD)
    page.click("#pay")
    checking = page.locator("#checking")
    expect(checking).to_be_visible()
    expect(page.locator("#message")).not_to_contain_text("refused")
    expect(page.locator("#pay")).to_be_disabled()
    expect(page.locator("body")).to_have_attribute("data-guard", "on")
    assert page.evaluate(SUBMIT_AND_COUNT_PAYS) == 0

    cut.release()
    expect(checking).to_be_hidden()
    expect(page.locator("#pay")).to_be_enabled()
    expect(page.locator("body")).to_have_attribute("data-guard", "off")


def test_a_lost_pay_on_a_connection_ended_for_good_says_to_reload(
    page: Page, server_url: str
) -> None:
    """The socket closes for good (4404) with the pay on it: nothing more can tell what
    became of it here. The page keeps Pay off and its warning (protocol 4.2), but no
    longer says it is asking and to keep the page open: it says to reload."""

    PayIntercept(page, cut_with(4404, "the session is gone"), forward=False)
    open_demo(page, server_url)
    page.fill("#card", OK_CARD)
    page.click("#pay")
    expect(page.locator("#connection")).to_have_attribute("data-state", "closed")
    checking = page.locator("#checking")
    expect(checking).to_be_visible()
    expect(checking).to_contain_text("Reload")
    expect(checking).not_to_contain_text("keep this page open")
    expect(page.locator("#announce")).to_contain_text("Reload")
    expect(page.locator("#pay")).to_be_disabled()


def test_reconnect_misses_nothing(page: Page, server_url: str, api: httpx.Client) -> None:
    session_id = open_demo(page, server_url)
    page.evaluate(RECORD_DURABLE)
    start_seq = page.evaluate("window.__paylive.lastSeq")

    page.fill("#card", TIMEOUT_CARD)
    page.click("#pay")
    expect(page.locator("#status")).to_have_attribute("data-status", "processing")

    # Offline while the attempt times out on the server: the page does not see it live...
    page.context.set_offline(True)
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
    wait_server_status(api, session_id, "interrupted")
    expect(page.locator("#status")).to_have_attribute("data-status", "processing")

    # ...and gets every event it missed, in order, when the network is back.
    page.context.set_offline(False)
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(page.locator("#status")).to_have_attribute("data-status", "interrupted")
    expect(page.locator("#no-double")).to_be_visible()

    # Dropped again (the socket closed under the page) while the merchant cancels.
    page.context.set_offline(True)
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
    response = api.post(f"/api/sessions/{session_id}/cancel")
    assert response.status_code == 200, response.text
    expect(page.locator("#status")).to_have_attribute("data-status", "interrupted")
    page.context.set_offline(False)
    expect(page.locator("#status")).to_have_attribute("data-status", "cancelled")
    expect(page.locator("#final-title")).to_have_text("Payment cancelled")

    # The page acknowledges the outcome it drew (protocol 10): one more durable event.
    server_seq = wait_seen(api, session_id)["seq"]
    page.wait_for_function(f"window.__paylive.lastSeq === {server_seq}")
    durable = page.evaluate("window.__durable")
    seqs = [seq for seq, _type, _cause in durable]
    assert seqs == list(range(start_seq + 1, server_seq + 1)), durable
    causes = [cause for _seq, kind, cause in durable if kind == "state"]
    assert "timeout" in causes and "cancelled" in causes, durable
    assert any(kind == "retry_prompt" for _seq, kind, _cause in durable)
    # Resumed with `since`: replays, not snapshots.
    assert page.evaluate("window.__snapshots") == 0
    assert page.evaluate("window.__paylive.lastSeq") == server_seq


def test_reconnect_after_socket_drop(page: Page, server_url: str, api: httpx.Client) -> None:
    session_id = open_demo(page, server_url)
    page.evaluate(RECORD_DURABLE)
    # Close the socket from the page; the client comes back by itself (backoff with jitter).
    page.evaluate("window.__paylive.drop()")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    assert api.post(f"/api/sessions/{session_id}/cancel").status_code == 200
    expect(page.locator("#status")).to_have_attribute("data-status", "cancelled")
    # The cancel, then the page's own acknowledgement of it (protocol 10).
    page.wait_for_function("window.__durable.length >= 2")
    assert page.evaluate("window.__durable.map((d) => d[2])") == ["cancelled", "outcome_seen"]


def test_pay_while_offline_is_queued(page: Page, server_url: str) -> None:
    open_demo(page, server_url)
    page.context.set_offline(True)
    expect(page.locator("#connection")).to_have_attribute("data-state", "offline")
    page.click("#pay")
    expect(page.locator("#message")).to_contain_text("as soon as the connection is back")
    # An unacknowledged pay keeps the guard up even before the session is processing.
    pending = page.evaluate("window.__paylive.pendingCommands")
    assert [(c["type"], c["sent"]) for c in pending] == [("pay", False)]
    assert page.evaluate("window.__paylive.guardActive") is True
    page.context.set_offline(False)
    expect(page.locator("#status")).to_have_attribute("data-status", "succeeded")
    # The pay was acknowledged; the page then says it saw the outcome ("seen"), a
    # command of its own that is pending until its ack: every command ends acknowledged.
    page.wait_for_function("window.__paylive.pendingCommands.length === 0")
    expect(page.locator("#message")).to_have_text("")


def test_bad_secret_does_not_reconnect(page: Page, server_url: str, api: httpx.Client) -> None:
    session = create_session(api)
    page.goto(f"{server_url}/client/checkout.html#session={session['id']}&secret=not-the-secret")
    expect(page.locator("#connection")).to_have_attribute("data-state", "closed")
    expect(page.locator("#message")).to_contain_text("unauthorized")
    page.wait_for_timeout(800)
    assert page.evaluate("window.__paylive.connection") == "closed"


def test_checkout_from_api_session(page: Page, server_url: str, api: httpx.Client) -> None:
    session = create_session(api, amount=500)
    fragment = f"session={session['id']}&secret={session['client_secret']}"
    page.goto(f"{server_url}/client/checkout.html#{fragment}")
    expect(page.locator("#status")).to_have_attribute("data-status", "created")
    expect(page.locator("#amount")).to_contain_text("5.00")
    page.click("#cancel")
    expect(page.locator("#status")).to_have_attribute("data-status", "cancelled")


def test_admin_dashboard_live(page: Page, server_url: str, api: httpx.Client) -> None:
    # /admin redirects to the page; the fragment survives the redirect.
    page.goto(f"{server_url}/admin#token={ADMIN_TOKEN}")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    assert urlsplit(page.url).path == "/client/admin.html"
    # The token left the address bar at once; it stays in this tab's sessionStorage.
    assert ADMIN_TOKEN not in page.url
    assert page.evaluate("sessionStorage.getItem('paylive.adminToken')") == ADMIN_TOKEN
    expect(page.locator("#sum-active")).not_to_have_text("–")

    session = create_session(api, amount=4200)
    row = page.locator(f"tr[data-session-id='{session['id']}']")
    expect(row).to_be_visible()
    expect(row).to_have_attribute("data-status", "created")
    expect(row.locator("td.amount")).to_contain_text("42.00")

    paid = api.post(
        f"/api/sessions/{session['id']}/attempts", json={"payment_method": {"card": OK_CARD}}
    )
    assert paid.status_code == 202, paid.text
    expect(row).to_have_attribute("data-status", "succeeded")
    expect(row.locator("td.attempt")).to_have_text("1 / 3")
    expect(row.locator(".status-pill")).to_have_text("succeeded")
    # The summary messages (every second) count it.
    page.wait_for_function("Number(document.getElementById('sum-succeeded').textContent) >= 1")


def test_admin_bad_token_shows_form(page: Page, server_url: str) -> None:
    page.goto(f"{server_url}/client/admin.html#token=wrong-token-0123456789")
    expect(page.locator("#token-form")).to_be_visible()
    expect(page.locator("#token-error")).to_contain_text("refused")
    assert page.evaluate("sessionStorage.getItem('paylive.adminToken')") is None
    page.fill("#token", ADMIN_TOKEN)
    page.click("#token-submit")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
