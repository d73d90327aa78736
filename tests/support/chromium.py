"""Which Chromium the tests drive and how the tests and scripts/screenshots.py start it,
apart from the test harness, so that the script (and mypy, which follows it) does not
import pytest."""

from __future__ import annotations

import os

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
