"""Headless Chromium for the browser tests, and axe-core from ``tests/js``.

CI sets ``PAYLIVE_REQUIRE_BROWSER=1``: there a missing browser, Playwright or axe-core
fails the run; elsewhere the tests that need them are skipped with the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REQUIRED = os.environ.get("PAYLIVE_REQUIRE_BROWSER") == "1"
CHROMIUM = os.environ.get("PAYLIVE_TEST_CHROMIUM", "/usr/bin/chromium")
# Chromium's headless mode is the whole browser: every new context (one per test) opened a
# window whose omnibox popup, a WebUI page, was rendered in a renderer of its own, about
# 1 CPU-second per context and over a quarter of the suite's CPU. The popup is never
# shown here, so its two features are off. Playwright passes its own --disable-features
# before these arguments (playwright-core's chromiumSwitches.ts); in case Chromium takes
# only the last one, that list is repeated here. A feature a newer Playwright adds and
# this list lacks is at worst a feature left on.
PLAYWRIGHT_DISABLED = [
    "AvoidUnnecessaryBeforeUnloadCheckSync",
    "DestroyProfileOnBrowserClose",
    "HttpsUpgrades",
    "HttpsFirstBalancedModeAutoEnable",
    "LensOverlay",
    "MediaRouter",
    "PaintHolding",
    "ThirdPartyStoragePartitioning",
    "AvoidCorsURLLoaderRestartOnRedirect",
    "OptimizationHints",
    "NetworkTimeServiceQuerying",
    "AimEnabled",
    "PreconnectToSearch",
]
DISABLED = [*PLAYWRIGHT_DISABLED, "WebUIOmniboxPopup", "WebUIOmniboxAimPopup"]
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-features=" + ",".join(DISABLED),
]
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
