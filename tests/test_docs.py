"""The README's pictures exist and stay small (scripts/screenshots.py makes them)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET = 800 * 1024  # all of docs/img: room for a phone-width set beside the 270 KB of today


def test_every_picture_the_readme_shows_is_there() -> None:
    readme = (ROOT / "README.md").read_text()
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert shown, "the README shows no picture"
    for link in shown:
        path = ROOT / link
        assert path.is_file(), f"README shows {link}, which does not exist"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{link} is not a PNG"


def test_pictures_stay_small() -> None:
    total = sum(p.stat().st_size for p in (ROOT / "docs" / "img").glob("*.png"))
    assert 0 < total <= BUDGET, f"docs/img holds {total / 1024:.0f} KB of PNG"
