"""scripts/screenshots.py still drives the real pages to every state it pictures.

It starts its own ``paylive serve`` and waits, in Chromium, for each state before
shooting it; a page that no longer reaches a state fails here.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

from ..support.browser import require_browser
from ..support.chromium import CHROMIUM

require_browser()

ROOT = Path(__file__).resolve().parent.parent.parent

SHOTS = ["admin", "checkout-processing", "checkout-interrupted", "checkout-succeeded"]
SHOTS.append("checkout-failed")


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def test_every_shot(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "screenshots.py"
    args = ["--out", str(tmp_path), "--chromium", CHROMIUM]
    args += ["--viewport", "480x720"]
    done = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stdout + done.stderr

    made = sorted(p.name for p in tmp_path.iterdir())
    assert made == sorted(f"{shot}-480x720.png" for shot in SHOTS)
    # The dashboard is the viewport; a checkout is its card, no wider than the viewport.
    assert png_size(tmp_path / "admin-480x720.png") == (480, 720)
    for shot in SHOTS[1:]:
        width, height = png_size(tmp_path / f"{shot}-480x720.png")
        assert 300 <= width <= 480 and height >= 300, (shot, width, height)


def test_a_bad_viewport_is_refused_before_anything_starts(tmp_path: Path) -> None:
    script = ROOT / "scripts" / "screenshots.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path), "--viewport", "wide"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "'wide' is not WIDTHxHEIGHT" in done.stderr
    assert list(tmp_path.iterdir()) == []
