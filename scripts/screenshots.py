#!/usr/bin/env python3
"""Pictures of the real pages for the README: the demo checkout in its main states and
the admin dashboard with live sessions, taken in headless Chromium from a real
``paylive serve`` this script starts on a free loopback port and stops.

    .venv/bin/python scripts/screenshots.py                             # 1100x900 into docs/img
    .venv/bin/python scripts/screenshots.py --viewport 1100x900 --viewport 390x844

Each picture is ``<shot>-<width>x<height>.png``, one per shot and viewport. Needs the
test extra (Playwright, ``pip install -e '.[test]'``) and Chromium (``--chromium``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import Browser, Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.support.chromium import LAUNCH_ARGS  # noqa: E402
from tests.support.servers import ADMIN_TOKEN, API_KEY, Server  # noqa: E402

# Sandbox cards (docs/protocol.md section 3).
OK = "4242424242424242"
DECLINED = "4000000000000002"
STOLEN = "4000000000009979"
NEVER_ANSWERS = "4000000000000408"
UNREACHABLE = "4000000000000507"

ATTEMPT_TIMEOUT_MS = 20_000  # long enough that "processing" stays on screen
RETRY_DELAY_MS = 3_000  # short enough that a retry in the admin batch waits little
TIMINGS = {
    "PAYLIVE_ATTEMPT_TIMEOUT_MS": str(ATTEMPT_TIMEOUT_MS),
    "PAYLIVE_RETRY_DELAY_MS": str(RETRY_DELAY_MS),
    "PAYLIVE_SANDBOX_DELAY_MS": "300",
    "PAYLIVE_COUNTDOWN_INTERVAL_MS": "1000",
}
WAIT_MS = 10_000  # the longest any one page state may take to appear
MARGIN = 24  # px around the checkout card, so its shadow stays in the picture

Viewport = tuple[int, int]


def viewport(text: str) -> Viewport:
    """``WIDTHxHEIGHT`` in CSS pixels, as in ``390x844``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, as in 390x844") from None
    if not (200 <= width <= 4000 and 200 <= height <= 4000):
        raise argparse.ArgumentTypeError(f"{text!r}: each side must be 200 to 4000 px")
    return width, height


def name(shot: str, size: Viewport) -> str:
    return f"{shot}-{size[0]}x{size[1]}.png"


@contextmanager
def opened(browser: Browser, size: Viewport) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": size[0], "height": size[1]})
    context.set_default_timeout(WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def shoot_card(page: Page, path: Path) -> None:
    """The checkout card and its footer with a margin, not the empty page around them."""
    boxes = [page.locator("#checkout").bounding_box()]
    footer = page.locator("body > footer")
    if footer.count():
        boxes.append(footer.first.bounding_box())
    shown = [box for box in boxes if box is not None]
    assert shown, "the checkout card is not on the page"
    width = (page.viewport_size or {"width": 0})["width"]
    left = max(0.0, min(box["x"] for box in shown) - MARGIN)
    top = max(0.0, min(box["y"] for box in shown) - MARGIN)
    right = min(float(width), max(box["x"] + box["width"] for box in shown) + MARGIN)
    bottom = max(box["y"] + box["height"] for box in shown) + MARGIN
    page.screenshot(
        path=str(path),
        full_page=True,
        animations="disabled",
        clip={"x": left, "y": top, "width": right - left, "height": bottom - top},
    )


def checkout(page: Page, base: str, card: str, status: str) -> None:
    """A fresh demo session, paid with ``card``, until the page shows ``status``."""
    page.goto(f"{base}/demo")
    expect(page.locator("#status")).to_have_attribute("data-status", "created")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    page.fill("#card", card)
    page.click("#pay")
    expect(page.locator("#status")).to_have_attribute("data-status", status)


def processing(page: Page, base: str) -> None:
    checkout(page, base, NEVER_ANSWERS, "processing")
    # A second into the attempt: the countdown has moved and its bar is nearly full.
    page.wait_for_function(
        "(ms) => { const r = window.__paylive.remainingMs(); return r !== null && r <= ms; }",
        arg=ATTEMPT_TIMEOUT_MS - 1000,
    )


def interrupted(page: Page, base: str) -> None:
    checkout(page, base, UNREACHABLE, "interrupted")
    expect(page.locator("#no-double")).to_be_visible()
    page.wait_for_function(
        "(ms) => { const r = window.__paylive.retryInMs(); return r !== null && r <= ms; }",
        arg=RETRY_DELAY_MS - 1000,
    )


def succeeded(page: Page, base: str) -> None:
    checkout(page, base, OK, "succeeded")


def failed(page: Page, base: str) -> None:
    checkout(page, base, STOLEN, "failed")


CHECKOUT_SHOTS: dict[str, Callable[[Page, str], None]] = {
    "checkout-processing": processing,
    "checkout-interrupted": interrupted,
    "checkout-succeeded": succeeded,
    "checkout-failed": failed,
}

# The admin batch: (order, amount in minor units, currency, cards tried in turn).
BATCH: list[tuple[str, int, str, list[str]]] = [
    ("order-1041", 4900, "EUR", [OK]),
    ("order-1042", 12999, "EUR", [NEVER_ANSWERS]),
    ("order-1043", 2500, "USD", [UNREACHABLE]),
    ("order-1044", 8900, "GBP", [STOLEN]),
    ("order-1045", 3450, "EUR", [UNREACHABLE, OK]),
    ("order-1046", 1999, "EUR", []),
    ("order-1047", 7600, "EUR", [DECLINED]),
    ("order-1048", 5400, "USD", [OK]),
    ("order-1049", 2200, "EUR", [NEVER_ANSWERS]),
]
FINAL = {OK: "succeeded", NEVER_ANSWERS: "processing", UNREACHABLE: "interrupted"}
FINAL.update({STOLEN: "failed", DECLINED: "interrupted"})


def drive(http: httpx.Client, order: str, amount: int, currency: str, cards: list[str]) -> str:
    """Create one session and pay it with each card in turn; returns its id."""
    body = {"order_id": order, "amount": amount, "currency": currency}
    created = http.post("/api/sessions", json=body)
    created.raise_for_status()
    session: dict[str, Any] = created.json()
    for card in cards:
        if session.get("retry_at"):
            # A retry is refused before retry_at (409); same machine, same clock.
            time.sleep(max(0.0, session["retry_at"] / 1000 - time.time()) + 0.05)
        paid = http.post(
            f"/api/sessions/{session['id']}/attempts", json={"payment_method": {"card": card}}
        )
        paid.raise_for_status()
        session = wait_for(http, session["id"], FINAL[card])
    return str(session["id"])


def wait_for(http: httpx.Client, session_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        session: dict[str, Any] = http.get(f"/api/sessions/{session_id}").json()
        if session["status"] == status:
            return session
        if time.monotonic() > deadline:
            raise RuntimeError(f"{session_id} never became {status}: {session}")
        time.sleep(0.05)


def admin(browser: Browser, base: str, sizes: Sequence[Viewport], out: Path) -> list[Path]:
    """One dashboard per viewport, open while the batch happens, so every page shows it live."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with ExitStack() as stack, httpx.Client(base_url=base, headers=headers) as http:
        pages = [stack.enter_context(opened(browser, size)) for size in sizes]
        for page in pages:
            page.goto(f"{base}/admin#token={ADMIN_TOKEN}")
            expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
        expected = {drive(http, *row): FINAL[row[3][-1]] if row[3] else "created" for row in BATCH}
        succeeded = sum(1 for status in expected.values() if status == "succeeded")
        paths = []
        for page, size in zip(pages, sizes, strict=True):
            for session_id, status in expected.items():
                row = page.locator(f"tr[data-session-id='{session_id}']")
                expect(row).to_have_attribute("data-status", status)
            # The summary comes every second; wait for the one that counts the batch.
            page.wait_for_function(
                "(n) => Number(document.getElementById('sum-succeeded').textContent) === n",
                arg=succeeded,
            )
            path = out / name("admin", size)
            # Animations (the rows' highlight) are run to their end first.
            page.screenshot(path=str(path), animations="disabled")
            paths.append(path)
        return paths


def take(out: Path, sizes: Sequence[Viewport], chromium: str) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    with Server(env=TIMINGS) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        try:
            # The dashboard first, while the server holds only its batch.
            paths += admin(browser, server.url, sizes, out)
            for size in sizes:
                for shot, reach in CHECKOUT_SHOTS.items():
                    with opened(browser, size) as page:
                        reach(page, server.url)
                        path = out / name(shot, size)
                        shoot_card(page, path)
                        paths.append(path)
        finally:
            browser.close()
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="folder")
    parser.add_argument(
        "--viewport",
        type=viewport,
        action="append",
        help="WIDTHxHEIGHT in CSS pixels; repeat for several (default 1100x900)",
    )
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the browser to drive")
    args = parser.parse_args(argv)
    sizes: list[Viewport] = args.viewport or [(1100, 900)]
    for path in take(args.out, sizes, args.chromium):
        print(f"{path.stat().st_size / 1024:7.1f} KB  {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
