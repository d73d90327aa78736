"""Headless Chromium for the browser tests, and axe-core from ``tests/js``.

CI sets ``PAYLIVE_REQUIRE_BROWSER=1``: there a missing browser, Playwright or axe-core
fails the run; elsewhere the tests that need them are skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .chromium import CHROMIUM

REQUIRED = os.environ.get("PAYLIVE_REQUIRE_BROWSER") == "1"
# Test-only npm packages (tests/js/package.json), installed by `npm ci --prefix tests/js`.
AXE = Path(__file__).resolve().parent.parent / "js" / "node_modules" / "axe-core" / "axe.min.js"


def require_browser() -> None:
    """Skip the calling test module when Playwright or Chromium is missing (unless required)."""
    if REQUIRED:
        return
    pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}", allow_module_level=True)


def axe_script() -> Path:
    """The axe-core bundle to inject into a page; skips (or fails when required) without it."""
    if not AXE.exists():
        reason = f"axe-core is not installed ({AXE} is missing): run `npm ci --prefix tests/js`"
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    return AXE
