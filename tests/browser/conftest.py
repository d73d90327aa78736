"""Fixtures of the browser test modules.

Chromium is started once for each run of browser modules on a process, and closed
before any other test: Playwright's sync API must not outlive it (later modules run
asyncio loops of their own). Each module calls
``require_browser()`` before importing Playwright and sets ``SERVER_ENV`` (see
``tests/conftest.py``) to the timings it needs; a module may set ``VIEWPORT`` for its
pages.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from ..support import tls
from ..support.chromium import CHROMIUM, LAUNCH_ARGS
from ..support.servers import API_KEY, Server

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

HERE = Path(__file__).resolve().parent
WAIT_MS = 5000  # the longest any single expectation may take
VIEWPORT = {"width": 1100, "height": 900}


# One Chromium for a run of browser modules on this process (a launch costs over a
# CPU-second); closed before any other test, since Playwright's sync API holds an
# event loop that the other tiers' asyncio tests cannot run beside.
_shared: dict[str, Any] = {}


@pytest.fixture(scope="module")
def browser() -> Browser:
    if "browser" not in _shared:
        from playwright.sync_api import sync_playwright

        playwright = sync_playwright().start()
        _shared["playwright"] = playwright
        _shared["browser"] = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
    browser: Browser = _shared["browser"]
    return browser


def _close_browser() -> None:
    browser, playwright = _shared.pop("browser", None), _shared.pop("playwright", None)
    try:
        if browser is not None:
            browser.close()
    finally:
        if playwright is not None:
            playwright.stop()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    # Called for this folder's tests only, after their fixtures' teardown.
    if nextitem is None or HERE not in nextitem.path.parents:
        _close_browser()


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
    with httpx.Client(
        base_url=server.url, headers=headers, timeout=5, verify=tls.CONTEXT
    ) as client:
        yield client
