"""Named staff credentials and their roles (docs/protocol.md 8.1): PAYLIVE_STAFF_TOKENS
and its file read and checked, each token found in constant time, each role allowed
what the ones before it are."""

from __future__ import annotations

from pathlib import Path

import pytest

from paylive.settings import Settings, SettingsError, load_settings
from paylive.web.auth import ADMIN, MERCHANT, principal_for

VERA = "viewer-token-0123456789"
OTTO = "operator-token-0123456789"


def test_staff_are_read_from_the_variable() -> None:
    s = load_settings(
        {
            "PAYLIVE_STAFF_TOKENS": f" vera:viewer:{VERA} , otto:operator:{OTTO},otto:operator:new-{OTTO}"
        }
    )
    assert s.staff_tokens == (
        ("vera", "viewer", VERA),
        ("otto", "operator", OTTO),
        ("otto", "operator", f"new-{OTTO}"),  # rotation: the new token beside the old
    )


def test_staff_are_read_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "staff"
    path.write_text(f"# the shop's staff\nvera:viewer:{VERA}\n\n  otto:operator:{OTTO}  \n")
    s = load_settings({"PAYLIVE_STAFF_TOKENS_FILE": str(path)})
    assert [name for name, _, _ in s.staff_tokens] == ["vera", "otto"]
    # The file already read into the variable (as a secrets loader may do) is no clash.
    same = load_settings(
        {"PAYLIVE_STAFF_TOKENS_FILE": str(path), "PAYLIVE_STAFF_TOKENS": path.read_text()}
    )
    assert same.staff_tokens == s.staff_tokens


@pytest.mark.parametrize(
    "value, named",
    [
        ("vera:viewer:short", "at least 16"),
        (f"vera:boss:{VERA}", "viewer, operator or admin"),
        (f"vera:{VERA}", "viewer, operator or admin"),
        (f":viewer:{VERA}", "name:role:token"),
        (f"ve ra:viewer:{VERA}", "name:role:token"),
        (VERA, "the role must be"),
        (f"vera:viewer:{VERA},otto:admin:{VERA}", "listed twice"),
    ],
)
def test_bad_entries_are_refused_by_name(value: str, named: str) -> None:
    with pytest.raises(SettingsError, match="PAYLIVE_STAFF_TOKENS") as caught:
        load_settings({"PAYLIVE_STAFF_TOKENS": value})
    assert named in str(caught.value)
    assert VERA not in str(caught.value), "a token is never printed"


def test_a_staff_file_with_a_byte_order_mark_is_read_as_its_text(tmp_path: Path) -> None:
    # As Notepad saves UTF-8: the mark is no part of the first staff member's name.
    path = tmp_path / "staff"
    path.write_bytes(f"vera:viewer:{VERA}\r\n".encode("utf-8-sig"))
    s = load_settings({"PAYLIVE_STAFF_TOKENS_FILE": str(path)})
    assert s.staff_tokens == (("vera", "viewer", VERA),)


def test_a_staff_file_past_64_kib_is_refused_not_cut(tmp_path: Path) -> None:
    # Cut at the bound, the staff past it were left out without a word, and the last
    # line's token was read shorter (weaker) than written.
    lines = [f"s{n:04d}:viewer:{VERA}{n:04d}" for n in range(2_000)]
    path = tmp_path / "staff"
    path.write_text("\n".join(lines) + "\n")
    assert path.stat().st_size > 64 * 1024
    with pytest.raises(SettingsError, match="PAYLIVE_STAFF_TOKENS_FILE names a file over 64 KiB"):
        load_settings({"PAYLIVE_STAFF_TOKENS_FILE": str(path)})


def test_a_missing_file_or_both_set_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="PAYLIVE_STAFF_TOKENS_FILE"):
        load_settings({"PAYLIVE_STAFF_TOKENS_FILE": str(tmp_path / "none")})
    path = tmp_path / "staff"
    path.write_text(f"vera:viewer:{VERA}\n")
    with pytest.raises(SettingsError, match="both set"):
        load_settings(
            {"PAYLIVE_STAFF_TOKENS_FILE": str(path), "PAYLIVE_STAFF_TOKENS": f"otto:admin:{OTTO}"}
        )


def test_each_token_is_its_staff_member_with_its_role() -> None:
    settings = Settings(
        api_key="merchant-key-0123456789",
        admin_token="old-admin-token-0123456789",
        secret="s" * 20,
        staff_tokens=(("vera", "viewer", VERA), ("otto", "operator", OTTO)),
    )
    vera = principal_for(VERA, settings.credentials)
    otto = principal_for(OTTO, settings.credentials)
    old = principal_for("old-admin-token-0123456789", settings.credentials)
    assert vera is not None and (vera.kind, vera.name, vera.role) == (ADMIN, "vera", "viewer")
    assert otto is not None and otto.at_least("viewer") and otto.at_least("operator")
    assert not otto.at_least("admin") and not vera.at_least("operator")
    assert old is not None and (old.name, old.role) == ("admin", "admin") and old.at_least("admin")
    merchant = principal_for("merchant-key-0123456789", settings.credentials)
    assert merchant is not None and merchant.kind == MERCHANT and merchant.who == "merchant"
    assert principal_for(VERA[:-1], settings.credentials) is None
