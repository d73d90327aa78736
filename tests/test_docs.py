"""The docs stay true: the README's pictures exist and stay small (scripts/screenshots.py
makes them), every setting is described once (in docs/configuration.md, and in no other
doc's table), and links lead somewhere."""

from __future__ import annotations

import os
import re
from pathlib import Path

from paylive.settings import SECRET_VARIABLES, VARIABLES

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


def _settings_variables() -> set[str]:
    # The table settings.py parses by: what the server reads is what is documented.
    return {var.env for var in VARIABLES if var.env.startswith("PAYLIVE_")}


def _rows() -> dict[str, list[str]]:
    """docs/configuration.md's table: each variable named in a row's first cell, with
    the rows that name it (their default cell)."""
    rows: dict[str, list[str]] = {}
    for line in (ROOT / "docs/configuration.md").read_text().splitlines():
        if line.startswith("| `"):
            cells = line.split("|")
            names = re.findall(r"`((?:PAYLIVE_[A-Z0-9_]+)|HOST|PORT)`", cells[1])
            defaults = [part.strip() for part in cells[2].split(", ")]
            for index, name in enumerate(names):
                shown = defaults[index] if len(defaults) == len(names) else ""
                rows.setdefault(name, []).append(shown)
    return rows


def test_every_variable_the_settings_read_is_documented_once() -> None:
    """A PAYLIVE_* variable of the settings table has exactly one row in
    docs/configuration.md's table, and the contract names it; a row naming a variable
    that nothing reads fails too."""
    names = _settings_variables()
    assert "PAYLIVE_API_KEY" in names and "PAYLIVE_TRUSTED_PROXIES" in names
    rows = {name: shown for name, shown in _rows().items() if name.startswith("PAYLIVE_")}
    missing = sorted(names - set(rows))
    assert not missing, f"docs/configuration.md has no row for {missing}"
    twice = sorted(name for name, shown in rows.items() if len(shown) > 1)
    assert not twice, f"docs/configuration.md describes {twice} more than once"
    unknown = sorted(set(rows) - names)
    assert not unknown, f"docs/configuration.md describes {unknown}, which nothing reads"
    contract = (ROOT / "docs/protocol.md").read_text()
    missing = sorted(name for name in names if f"`{name}`" not in contract)
    assert not missing, f"docs/protocol.md does not name {missing}"


def _markdown() -> list[Path]:
    """Every markdown file of the repository (not the venv's, node's or git's)."""
    found: list[Path] = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d != "node_modules"]
        found += [Path(folder) / name for name in files if name.endswith(".md")]
    return sorted(found)


def test_no_other_doc_describes_a_variable_in_a_table_row() -> None:
    """docs/configuration.md is the one description of each variable: a table row that
    starts with a PAYLIVE_* name anywhere else is a second description, which drifts
    (the protocol named the API key's default "unset" while this page said
    "generated"). Other docs name a variable in prose, for what they promise of it."""
    table = ROOT / "docs/configuration.md"
    docs = _markdown()
    assert table in docs and ROOT / "docs/protocol.md" in docs
    rows = [
        f"{doc.relative_to(ROOT)}:{number}: {line[:60]}"
        for doc in docs
        if doc != table
        for number, line in enumerate(doc.read_text(errors="replace").splitlines(), 1)
        if line.startswith("| `PAYLIVE_")
    ]
    assert not rows, "described outside docs/configuration.md:\n" + "\n".join(rows)


def test_each_documented_default_is_the_settings_default() -> None:
    # Where a row gives a variable's default as a value (`30000`) or as unset,
    # generated or this server, it is the table's; prose ("3 days") is left alone.
    rows, wrong = _rows(), {}
    for var in VARIABLES:
        shown = rows.get(var.env, [""])[0]
        if shown.startswith("`") or shown in ("unset", "generated", "this server"):
            if shown.strip("`") != var.default:
                wrong[var.env] = (shown, var.default)
    assert not wrong, f"docs/configuration.md's default, and the settings': {wrong}"


def test_the_secret_files_row_names_the_secrets_the_settings_read_from_files() -> None:
    # "the four above" are the generated ones; the others are named one by one.
    row = next(
        line
        for line in (ROOT / "docs/configuration.md").read_text().splitlines()
        if line.startswith("| `<secret>_FILE`")
    )
    named = set(re.findall(r"`(PAYLIVE_[A-Z0-9_]+)`", row))
    generated = {var.env for var in VARIABLES if var.generate}
    assert "the four above" in row and len(generated) == 4
    assert named | generated == set(SECRET_VARIABLES)


def test_no_doc_names_a_setting_that_does_not_exist() -> None:
    """Every PAYLIVE_* name in the README and docs/ is a setting, a secret's _FILE, or a
    variable something else in the repository reads (the Procfile, the tests)."""
    known = _settings_variables() | {f"{name}_FILE" for name in SECRET_VARIABLES}
    known.add("PAYLIVE_STAFF_TOKENS_FILE")
    elsewhere = "\n".join(
        path.read_text(errors="replace")
        for pattern in ("tests/**/*.py", "Procfile", "bench/**/*.py", ".ci/*")
        for path in ROOT.glob(pattern)
        if path.is_file() and path.name != "test_docs.py"
    )
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for doc in docs:
        for name in set(re.findall(r"PAYLIVE_[A-Z0-9_]*[A-Z0-9]", doc.read_text())):
            if name not in known:
                assert name in elsewhere, f"{doc.name} names {name}, which nothing reads"


def test_the_readme_is_a_front_page_whose_links_lead_somewhere() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme):
        if not target.startswith(("http:", "https:")):
            assert (ROOT / target).exists(), f"README links to {target}, which does not exist"


def _prose() -> dict[str, str]:
    docs = {p.relative_to(ROOT).as_posix(): p.read_text() for p in (ROOT / "docs").glob("*.md")}
    docs.pop("docs/protocol.md")  # the contract lists the sandbox's cards in its own section
    return {"README.md": (ROOT / "README.md").read_text(), **docs}


def test_card_numbers_are_sent_only_in_the_sandbox_sections() -> None:
    """The first payment example is the hosted-field path (a PaymentMethod id); a raw
    card number sent to paylive appears only under a sandbox heading, in any doc."""
    readme = (ROOT / "README.md").read_text()
    sends_card = re.compile(r'"card"\s*:\s*"\d{12,19}"|\.pay\(\s*[\'"]?\d{12,19}')
    first_pay = re.search(r'"type"\s*:\s*"pay"|\.pay\(', readme)
    assert first_pay is not None
    assert "stripe" in readme[first_pay.start() : first_pay.start() + 80], "first pay example"
    for name, text in _prose().items():
        heading = ""
        for line in text.splitlines():
            if line.startswith("#"):
                heading = line
            if sends_card.search(line):
                assert "sandbox" in heading.lower(), f"{name}: a card number under {heading!r}"


def test_links_between_the_docs_lead_somewhere() -> None:
    for name, text in _prose().items():
        base = (ROOT / name).parent
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not target.startswith(("http:", "https:", "mailto:")):
                assert (base / target).exists(), f"{name} links to {target}, which does not exist"


def test_the_code_names_sections_of_the_contract_that_exist() -> None:
    """A source or migration's "protocol.md section N" leads to a heading of
    docs/protocol.md: the contract was renumbered once (its table "Where the former
    section 6 went"), and a number from before leads to the wrong place or nowhere."""
    headings = set(
        re.findall(r"^#{2,3} (\d+(?:\.\d+)*)\.? ", (ROOT / "docs/protocol.md").read_text(), re.M)
    )
    assert {"1", "5.2", "8.2", "10"} <= headings, sorted(headings)
    reference = re.compile(r"protocol(?:\.md)?,? sections? (\d+(?:\.\d+)*)")
    stale = []
    for path in sorted((ROOT / "src").rglob("*")):
        if path.suffix in {".py", ".sql", ".lua"}:
            for number in reference.findall(path.read_text()):
                if number not in headings:
                    stale.append(f"{path.relative_to(ROOT)}: section {number}")
    assert not stale, stale
