"""The checkout and the dashboard where a WebSocket cannot get through (protocol 4.2):
headless Chromium behind a real proxy process (tests/support/httpproxy.py) that
answers every WebSocket ``Upgrade`` with 403, and, in the second case, also buffers
streamed responses until they end; in the last case it lets the handshake through and
holds every frame the server sends on the socket. Two ``paylive serve`` workers on one real Redis
behind it, requests alternating between them (round-robin, one upstream connection
per request): nothing missed, nothing shown twice, no secret in any URL.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from ..support.browser import require_browser
from ..support.httpproxy import HttpProxy
from ..support.redisproc import RedisProc
from ..support.servers import ADMIN_TOKEN, API_KEY, Server

require_browser()
from playwright.sync_api import Page, Route, expect  # noqa: E402

TIMEOUT_CARD = "4000000000000408"
OK_CARD = "4242424242424242"
WAIT_MS = 15_000  # the longest a page state may take behind the proxy, on a busy machine
# How long the client waits for a stream's first message before it falls back to
# long-polling (``firstMessageTimeout`` of client/paylive/transport.js).
FIRST_MESSAGE_MS = 5_000
# How often the client on a lower transport tries a better one (``upgradeInterval``).
UPGRADE_MS = 30_000

TIMINGS = {
    "PAYLIVE_ATTEMPT_TIMEOUT_MS": "2000",
    "PAYLIVE_RETRY_DELAY_MS": "500",
    "PAYLIVE_SANDBOX_DELAY_MS": "200",
    "PAYLIVE_COUNTDOWN_INTERVAL_MS": "250",
    "PAYLIVE_SSE_HEARTBEAT_MS": "1000",
}


@pytest.fixture(scope="module")
def workers(redis: RedisProc) -> Iterator[tuple[Server, Server]]:
    env = {**TIMINGS, "PAYLIVE_REDIS_URL": redis.url}
    with Server(env) as a, Server(env) as b:
        yield a, b


def record(page: Page) -> None:
    """Keep every durable event the page applied ('state' and 'retry_prompt' are emitted
    once per applied event; a duplicate delivery is skipped before them)."""
    page.evaluate(
        """() => {
          window.__applied = [];
          window.__paylive.on('state', (m) => window.__applied.push(m.seq));
          window.__paylive.on('retry_prompt', (m) => window.__applied.push(m.seq));
        }"""
    )


def skip_the_silent_stream(page: Page, proxy: HttpProxy) -> None:
    """Once the page's event stream is open behind the buffering proxy (which will
    never deliver anything on it), move the page's clock past the client's wait for a
    first message rather than waiting it out: the same timer fires, at once."""
    expect(page.locator("#connection")).to_have_attribute("data-transport", "sse")
    deadline = time.monotonic() + WAIT_MS / 1000
    while "/stream?ticket=" not in proxy.access_log():
        assert time.monotonic() < deadline, "the page never opened its event stream"
        time.sleep(0.05)
    page.clock.fast_forward(FIRST_MESSAGE_MS)


def checkout_flow(page: Page, proxy: HttpProxy, transport: str, a: Server) -> None:
    if transport == "polling":
        page.clock.install()  # Playwright's clock; it flows as the real one until moved
    page.goto(f"{proxy.url}/demo")
    if transport == "polling":
        skip_the_silent_stream(page, proxy)
    badge = page.locator("#connection")
    expect(badge).to_have_attribute("data-transport", transport, timeout=WAIT_MS)
    expect(badge).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
    expect(page.locator("#status")).to_have_attribute("data-status", "created")
    record(page)
    fragment = parse_qs(urlsplit(page.url).fragment)
    session_id, secret = fragment["session"][0], fragment["secret"][0]

    # An attempt that times out: the countdown, then the retry prompt.
    page.fill("#card", TIMEOUT_CARD)
    page.click("#pay")
    expect(page.locator("#status")).to_have_attribute("data-status", "processing", timeout=WAIT_MS)
    expect(page.locator("#processing")).to_be_visible()
    page.wait_for_function("Number(document.getElementById('countdown').dataset.remainingMs) > 0")
    expect(page.locator("#countdown")).to_have_text(re.compile(r"^\d+(\.\d)?\s?s left$"))
    expect(page.locator("#status")).to_have_attribute("data-status", "interrupted", timeout=WAIT_MS)
    expect(page.locator("#prompt")).to_be_visible()
    expect(page.locator("#no-double")).to_contain_text("You will not be charged twice")
    expect(page.locator("#prompt-text")).to_contain_text("attempt 2 of 3")

    # The retry succeeds: the final outcome.
    page.fill("#card", OK_CARD)
    expect(page.locator("#retry")).to_be_enabled(timeout=WAIT_MS)
    page.click("#retry")
    expect(page.locator("#status")).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    expect(page.locator("#final-title")).to_have_text("Payment succeeded")
    assert page.evaluate("window.__paylive.transport") == transport

    # Every durable event the server has, applied once each, in order.
    history = httpx.get(
        f"{a.url}/api/admin/sessions/{session_id}/events",
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ).json()["events"]
    server_seqs = [e["seq"] for e in history]
    applied = page.evaluate("window.__applied")
    assert applied == server_seqs, (applied, server_seqs)
    assert applied == list(range(1, len(applied) + 1))
    no_secret_in_urls(proxy, [a], secret)


def no_secret_in_urls(proxy: HttpProxy, servers: list[Server], *secrets: str) -> None:
    """Neither the proxy's access log (request lines as sent) nor the workers' hold a
    token or a secret in a URL."""
    lines = proxy.access_log().splitlines()
    assert any("/api/tickets" in line for line in lines)
    for text in [proxy.access_log(), *(s.log() for s in servers)]:
        for secret in (ADMIN_TOKEN, API_KEY, *secrets):
            assert secret not in text
        assert "token=" not in text


def both_served(servers: tuple[Server, Server], path: str) -> None:
    """Requests alternated: each worker served some of the page's ``path`` requests."""
    for server in servers:
        assert re.search(rf'"(GET|POST) /api[^ ]*{path}', server.log()), server.log()[-2000:]


def test_the_checkout_on_server_sent_events_when_websockets_are_refused(
    page: Page, workers: tuple[Server, Server]
) -> None:
    a, b = workers
    with HttpProxy([a.port, b.port], refuse_upgrade=True) as proxy:
        checkout_flow(page, proxy, "sse", a)
        assert "[upgrade]" in proxy.access_log()  # the socket was tried first
        assert "/stream?ticket=" in proxy.access_log()
        # No sticky sessions: the proxy alternates requests, so a ticket taken from one
        # worker opens its stream on the other (a checkout may need only one ticket).
        both_served(workers, "/(tickets|stream)")
        assert "/stream" in a.log() + b.log()
        no_secret_in_urls(proxy, [a, b])


def test_the_checkout_on_long_polling_when_streams_are_buffered(
    page: Page, workers: tuple[Server, Server]
) -> None:
    a, b = workers
    with HttpProxy([a.port, b.port], refuse_upgrade=True, buffer=True) as proxy:
        checkout_flow(page, proxy, "polling", a)
        log = proxy.access_log()
        assert "[upgrade]" in log and "/stream?ticket=" in log  # both tried first
        assert "/events?" in log
        both_served(workers, "/events")
        no_secret_in_urls(proxy, [a, b])


def test_the_dashboard_on_server_sent_events_with_no_token_in_urls(
    page: Page, workers: tuple[Server, Server]
) -> None:
    a, b = workers
    with HttpProxy([a.port, b.port], refuse_upgrade=True) as proxy:
        page.goto(f"{proxy.url}/admin#token={ADMIN_TOKEN}")
        badge = page.locator("#connection")
        expect(badge).to_have_attribute("data-transport", "sse", timeout=WAIT_MS)
        expect(badge).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
        expect(badge).to_contain_text("SSE")
        # A session created now shows up through the stream.
        reply = httpx.post(
            f"{b.url}/api/sessions",
            json={"order_id": f"sse-{time.monotonic_ns()}", "amount": 500, "currency": "EUR"},
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
        session: dict[str, Any] = reply.json()
        expect(page.locator(f"text={session['order_id']}")).to_be_visible(timeout=WAIT_MS)
        no_secret_in_urls(proxy, [a, b])


def test_the_checkout_stays_on_sse_when_a_middlebox_holds_the_sockets_frames(
    page: Page, workers: tuple[Server, Server]
) -> None:
    # The handshake passes, nothing comes down the socket: not its snapshot, not a pong.
    # The page moves down to SSE, and its probes back up must not take it onto such a
    # socket again, where it would see nothing of the payment.
    a, b = workers
    with HttpProxy([a.port, b.port], refuse_upgrade=False, hold_sockets=True) as proxy:
        page.clock.install()
        page.goto(f"{proxy.url}/demo")
        badge = page.locator("#connection")

        def upgrades() -> int:
            return proxy.access_log().count("[upgrade]")

        wait_until(lambda: upgrades() >= 1, "the page never tried its socket")
        time.sleep(0.5)  # the handshake's answer reaches the page
        page.clock.fast_forward(FIRST_MESSAGE_MS)
        expect(badge).to_have_attribute("data-transport", "sse", timeout=WAIT_MS)
        expect(badge).to_have_attribute("data-state", "connected", timeout=WAIT_MS)
        # The probe for a better transport (upgradeInterval, 30 s): a socket that opens
        # and answers nothing, given up after the wait for its first message.
        page.clock.fast_forward(UPGRADE_MS)
        wait_until(lambda: upgrades() >= 2, "the page never probed for its socket")
        time.sleep(0.5)
        assert page.evaluate("window.__paylive.transport") == "sse"
        page.clock.fast_forward(FIRST_MESSAGE_MS)
        page.fill("#card", OK_CARD)
        page.click("#pay")
        expect(page.locator("#status")).to_have_attribute(
            "data-status", "succeeded", timeout=WAIT_MS
        )
        assert page.evaluate("window.__paylive.transport") == "sse"


def wait_until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_MS / 1000
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


# A second client of the demo's session in the page, on SSE (its commands over HTTP),
# with short bounds; `window.__outcome` is how its pay settled.
def lose_the_first_answer(page: Page, command: str) -> list[str | None]:
    """The first ``POST .../<command>`` reaches paylive, which answers; a proxy's 502
    takes the answer's place on its way back. Later ones pass. The Idempotency-Key of
    each request, in order."""
    keys: list[str | None] = []

    def route_it(route: Route) -> None:
        keys.append(route.request.headers.get("idempotency-key"))
        if len(keys) == 1:
            route.fetch()
            route.fulfill(status=502, content_type="text/html", body="<h1>502 Bad Gateway</h1>")
        else:
            route.continue_()

    page.route(re.compile(rf"/api/sessions/[^/]+/{command}$"), route_it)
    return keys


PAY_OVER_HTTP = """async ([bounds, card]) => {
  const { PayliveSession } = await import('/client/paylive.js');
  const fragment = new URLSearchParams(location.hash.slice(1));
  const s = new PayliveSession({
    sessionId: fragment.get('session'), secret: fragment.get('secret'),
    transports: ['sse'], window: null, ...bounds,
  });
  window.__second = s;
  await new Promise((resolve) => s.on('session', resolve));
  return s.pay(card).then(() => ({ ok: true }), (err) => ({ ok: false, code: err.code }));
}"""


def attempts_of(server: Server, session_id: str) -> int:
    session = httpx.get(
        f"{server.url}/api/sessions/{session_id}",
        headers={"Authorization": f"Bearer {API_KEY}"},
    ).json()
    return int(session["attempt"])


def demo_session(page: Page, server: Server) -> str:
    page.goto(f"{server.url}/demo")
    expect(page.locator("#status")).to_have_attribute("data-status", "created")
    return parse_qs(urlsplit(page.url).fragment)["session"][0]


def test_a_pay_over_http_whose_answer_a_proxy_lost_is_sent_again_with_its_key(
    page: Page, workers: tuple[Server, Server]
) -> None:
    # The pay reaches paylive, which starts the attempt; the answer is replaced by a
    # proxy's 502 on its way back. The client sends the same request with the same
    # Idempotency-Key, and paylive answers with what it did: one attempt, the pay settled.
    a, _ = workers
    session_id = demo_session(page, a)
    keys = lose_the_first_answer(page, "attempts")
    settled = page.evaluate(PAY_OVER_HTTP, [{"resendDelay": 100}, OK_CARD])
    assert settled == {"ok": True}
    assert len(keys) == 2 and keys[0] and keys[1] == keys[0], keys
    assert page.evaluate("window.__second.outcomeUnknown") is False
    expect(page.locator("#status")).to_have_attribute("data-status", "succeeded", timeout=WAIT_MS)
    assert attempts_of(a, session_id) == 1


CANCEL_OVER_HTTP = """async (bounds) => {
  const { PayliveSession } = await import('/client/paylive.js');
  const fragment = new URLSearchParams(location.hash.slice(1));
  const s = new PayliveSession({
    sessionId: fragment.get('session'), secret: fragment.get('secret'),
    transports: ['sse'], window: null, ...bounds,
  });
  await new Promise((resolve) => s.on('session', resolve));
  return s.cancel().then(() => ({ ok: true }), (err) => ({ ok: false, code: err.code }));
}"""


def test_a_cancel_over_http_whose_answer_a_proxy_lost_is_sent_again_and_settles(
    page: Page, workers: tuple[Server, Server]
) -> None:
    # Before, only a pay or retry carried a key: a cancel whose answer a proxy lost
    # settled connection_lost though paylive had cancelled, and sent again by hand it
    # was refused invalid_state. Now its route keeps the key and the client resends it.
    a, _ = workers
    demo_session(page, a)
    keys = lose_the_first_answer(page, "cancel")  # paylive has it, and cancels
    assert page.evaluate(CANCEL_OVER_HTTP, {"resendDelay": 100}) == {"ok": True}
    assert len(keys) == 2 and keys[0] and keys[1] == keys[0], keys
    expect(page.locator("#status")).to_have_attribute("data-status", "cancelled", timeout=WAIT_MS)


def test_a_pay_over_http_whose_requests_never_end_is_bounded_and_then_checked(
    page: Page, workers: tuple[Server, Server]
) -> None:
    # A connection that swallows every request of the pay (none reaches paylive, none
    # ends): each is aborted after requestTimeout, sent again with its key, and then
    # the outcome is unknown until the session's state, asked for, says `created`.
    a, _ = workers
    session_id = demo_session(page, a)
    swallowed: list[Route] = []

    def swallow(route: Route) -> None:
        swallowed.append(route)  # never answered, never passed on

    page.route(re.compile(r"/api/sessions/[^/]+/attempts$"), swallow)
    bounds = {"requestTimeout": 500, "resends": 1, "resendDelay": 50, "commandTimeout": 500}
    settled = page.evaluate(PAY_OVER_HTTP, [bounds, OK_CARD])
    assert settled == {"ok": False, "code": "timeout"}
    assert len(swallowed) == 2
    assert (
        swallowed[1].request.headers["idempotency-key"]
        == swallowed[0].request.headers["idempotency-key"]
    )
    page.wait_for_function("window.__second.outcomeUnknown === false", timeout=WAIT_MS)
    assert page.evaluate("window.__second.status") == "created"
    assert attempts_of(a, session_id) == 0


def test_the_checkouts_cancel_ending_without_an_answer_speaks_plain_words(
    page: Page, workers: tuple[Server, Server]
) -> None:
    # The checkout on SSE sends its cancel over HTTP. Every request of it is answered
    # 409 idempotency_key_in_use (the first still running there), so the cancel settles
    # with that code: the customer once read "Cancel refused: a request with this
    # Idempotency-Key is running". The page says it in plain words, and keeps the code
    # for developers on the message (data-code); the same for paylive's 503 overloaded.
    a, b = workers
    answers = [
        (409, "idempotency_key_in_use", "a request with this Idempotency-Key is running"),
    ]

    def answer(route: Route) -> None:
        status, code, message = answers[-1]
        route.fulfill(
            status=status,
            content_type="application/json",
            json={"error": {"code": code, "message": message}},
        )

    with HttpProxy([a.port, b.port], refuse_upgrade=True) as proxy:
        page.goto(f"{proxy.url}/demo")
        badge = page.locator("#connection")
        expect(badge).to_have_attribute("data-transport", "sse", timeout=WAIT_MS)
        expect(page.locator("#status")).to_have_attribute("data-status", "created")
        page.route(re.compile(r"/api/sessions/[^/]+/cancel$"), answer)
        message = page.locator("#message")

        page.click("#cancel")
        expect(message).to_have_attribute("data-code", "idempotency_key_in_use", timeout=WAIT_MS)
        expect(message).to_have_text("Still cancelling — checking with the server…")

        answers.append((503, "overloaded", "the server is overloaded; retry later"))
        page.click("#cancel")
        expect(message).to_have_attribute("data-code", "overloaded", timeout=WAIT_MS)
        expect(message).to_have_text(
            "The payment server is busy right now. Please try cancelling again in a moment."
        )
        expect(page.locator("#status")).to_have_attribute("data-status", "created")
