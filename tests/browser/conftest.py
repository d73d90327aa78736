"""Headless Chromium for the browser test modules: one per module, because the sync API
must not outlive them (later modules run asyncio loops of their own). Each module calls
``require_browser()`` first, so this fixture never runs without Playwright and Chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from ..support.browser import CHROMIUM, LAUNCH_ARGS

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            browser.close()
