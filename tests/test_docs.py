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


def test_every_variable_the_settings_read_is_documented() -> None:
    """A PAYLIVE_* variable named in settings.py is in the README's table and the contract."""
    names = set(
        re.findall(r'"(PAYLIVE_[A-Z0-9_]+)"', (ROOT / "src/paylive/settings.py").read_text())
    )
    assert "PAYLIVE_API_KEY" in names and "PAYLIVE_TRUSTED_PROXIES" in names
    for doc in ("README.md", "docs/protocol.md"):
        text = (ROOT / doc).read_text()
        missing = sorted(name for name in names if f"`{name}`" not in text)
        assert not missing, f"{doc} does not document {missing}"


def test_the_readme_sends_card_numbers_only_in_the_sandbox_section() -> None:
    """The first payment example is the hosted-field path (a PaymentMethod id); a raw
    card number sent to paylive appears only under the sandbox heading."""
    readme = (ROOT / "README.md").read_text()
    sends_card = re.compile(r'"card"\s*:\s*"\d{12,19}"|\.pay\(\s*[\'"]?\d{12,19}')
    first_pay = re.search(r'"type"\s*:\s*"pay"|\.pay\(', readme)
    assert first_pay is not None
    assert "stripe" in readme[first_pay.start() : first_pay.start() + 80], "first pay example"
    heading = ""
    for line in readme.splitlines():
        if line.startswith("#"):
            heading = line
        if sends_card.search(line):
            assert "sandbox" in heading.lower(), f"a card number under {heading!r}: {line}"
