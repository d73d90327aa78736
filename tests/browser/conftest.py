"""Fixtures of the browser test modules.

Chromium is started once per module, because Playwright's sync API must not outlive
it (later modules run asyncio loops of their own). Each module calls
``require_browser()`` before importing Playwright and sets ``SERVER_ENV`` (see
``tests/conftest.py``) to the timings it needs; a module may set ``VIEWPORT`` for its
pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import httpx
import pytest

from ..support.browser import CHROMIUM, LAUNCH_ARGS
from ..support.servers import API_KEY, Server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

WAIT_MS = 5000  # the longest any single expectation may take
VIEWPORT = {"width": 1100, "height": 900}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A page in a fresh context; the test fails on any uncaught error in it."""
    viewport = getattr(request.module, "VIEWPORT", VIEWPORT)
    # bypass_csp: axe-core is injected as an inline script, which a page's CSP may forbid.
    context = browser.new_context(viewport=viewport, bypass_csp=True)
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="module")
def server_url(server: Server) -> str:
    """Where the module's server is, for the pages to open."""
    return server.url


@pytest.fixture
def api(server: Server) -> Iterator[httpx.Client]:
    """The merchant's HTTP API of this module's server."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=5) as client:
        yield client
