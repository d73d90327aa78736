"""Take the README's phone pictures (375 x 667, an iPhone SE) of the checkout and dashboard.

    .venv/bin/python scripts/phone_screenshots.py [--out docs/img] [--chromium /usr/bin/chromium]

Starts its own `paylive serve` (in-memory engine) on a free loopback port, drives the
demo checkout into its states with the sandbox cards, and writes one PNG per state.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "screenshots-api-key-0123456789"
ADMIN_TOKEN = "screenshots-admin-token-0123456789"
PHONE = {"width": 375, "height": 667}


@contextmanager
def serve() -> Iterator[str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYLIVE_")}
    env.update(
        PAYLIVE_API_KEY=API_KEY,
        PAYLIVE_ADMIN_TOKEN=ADMIN_TOKEN,
        PAYLIVE_RETRY_DELAY_MS="8000",  # the retry button still counts down in its picture
        PAYLIVE_SANDBOX_DELAY_MS="300",
    )
    command = [sys.executable, "-m", "paylive", "serve", "--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("paylive serve did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def checkout(page: Page, url: str, card: str | None, status: str) -> None:
    page.goto(f"{url}/demo")
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    if card:
        page.fill("#card", card)
        page.click("#pay")
    expect(page.locator("#status")).to_have_attribute("data-status", status)
    page.evaluate("document.activeElement.blur()")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    with serve() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport=PHONE)
        page.set_default_timeout(10_000)

        def shot(name: str) -> None:
            path = args.out / f"phone-{name}.png"
            page.screenshot(path=path)
            print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)

        checkout(page, url, "4000000000000408", "processing")  # never answers
        expect(page.locator("#countdown")).to_contain_text("left")
        shot("checkout-processing")
        checkout(page, url, "4000000000000507", "interrupted")  # network error
        shot("checkout-retry")
        page.emulate_media(color_scheme="dark")
        checkout(page, url, "4242424242424242", "succeeded")
        shot("checkout-paid-dark")
        page.emulate_media(color_scheme="light")

        page.goto(f"{url}/admin#token={ADMIN_TOKEN}")
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
        # The snapshot holds the active sessions; a paid one arrives live.
        headers = {"Authorization": f"Bearer {API_KEY}"}
        body = {"order_id": "order-1001", "amount": 4200, "currency": "EUR"}
        created = httpx.post(f"{url}/api/sessions", json=body, headers=headers).json()
        pay = {"payment_method": {"card": "4242424242424242"}}
        httpx.post(f"{url}/api/sessions/{created['id']}/attempts", json=pay, headers=headers)
        expect(page.locator("#sessions-body tr[data-status='succeeded']")).to_have_count(1)
        page.wait_for_timeout(1500)  # the row highlight fades and a summary arrives
        shot("admin")
        browser.close()


if __name__ == "__main__":
    main()
