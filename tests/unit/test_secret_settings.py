"""Secrets as lists (rotation) and from files (``<NAME>_FILE``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from paylive.settings import SettingsError, load_settings
from paylive.web.auth import ADMIN, CUSTOMER, MERCHANT, client_secret, principal_for

OLD = "old-key-0123456789abcdef"
NEW = "new-key-0123456789abcdef"


def test_every_secret_takes_a_list_whose_first_entry_signs() -> None:
    s = load_settings(
        {
            "PAYLIVE_API_KEY": f"{NEW}, {OLD}",
            "PAYLIVE_ADMIN_TOKEN": f"admin-{NEW},admin-{OLD}",
            "PAYLIVE_SECRET": f"sign-{NEW},sign-{OLD}",
        }
    )
    assert (s.api_key, s.api_keys) == (NEW, (NEW, OLD))
    assert s.admin_tokens == (f"admin-{NEW}", f"admin-{OLD}")
    assert (s.secret, s.signing_secrets) == (f"sign-{NEW}", (f"sign-{NEW}", f"sign-{OLD}"))
    who = s.credentials
    assert principal_for(OLD, who) == principal_for(NEW, who)
    assert principal_for(OLD, who) is not None and principal_for(OLD, who).kind == MERCHANT  # type: ignore[union-attr]
    assert principal_for(f"admin-{OLD}", who).kind == ADMIN  # type: ignore[union-attr]
    # A client secret signed under the old secret opens its session while it is listed.
    old_signed = client_secret(f"sign-{OLD}", "ps_abc")
    assert principal_for(old_signed, who) is not None
    assert principal_for(old_signed, who).kind == CUSTOMER  # type: ignore[union-attr]
    rotated = load_settings({"PAYLIVE_API_KEY": NEW, "PAYLIVE_SECRET": f"sign-{NEW}"})
    rotated_who = rotated.credentials
    assert principal_for(OLD, rotated_who) is None
    assert principal_for(old_signed, rotated_who) is None
    assert principal_for(client_secret(f"sign-{NEW}", "ps_abc"), rotated_who) is not None


@pytest.mark.parametrize("name", ["PAYLIVE_API_KEY", "PAYLIVE_METRICS_TOKEN"])
@pytest.mark.parametrize("value", [f"{NEW},short", f"{NEW},{NEW}", " , "])
def test_a_bad_list_is_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_the_metrics_token_takes_a_list() -> None:
    s = load_settings({"PAYLIVE_METRICS_TOKEN": f"metrics-{NEW}, metrics-{OLD}"})
    assert s.metrics_tokens == (f"metrics-{NEW}", f"metrics-{OLD}")


@pytest.mark.parametrize(
    "other",
    [
        {"PAYLIVE_ADMIN_TOKEN": f"admin-{NEW}"},
        {"PAYLIVE_API_KEY": f"admin-{NEW}"},
        {"PAYLIVE_STAFF_TOKENS": f"vera:viewer:admin-{NEW}"},
    ],
    ids=["admin", "api-key", "staff"],
)
def test_a_metrics_token_that_is_another_credential_is_refused(other: dict[str, str]) -> None:
    # An entry of the rotation too, not only its first: each one is accepted.
    env = {"PAYLIVE_METRICS_TOKEN": f"metrics-{NEW},admin-{NEW}", **other}
    with pytest.raises(SettingsError, match="PAYLIVE_METRICS_TOKEN") as caught:
        load_settings(env)
    assert "hold the same token" in str(caught.value) and NEW not in str(caught.value)


def test_an_override_of_one_value_replaces_its_list() -> None:
    s = load_settings({"PAYLIVE_API_KEY": f"{NEW},{OLD}"}, api_key="override-0123456789")
    assert s.api_keys == ("override-0123456789",)
    s = load_settings({"PAYLIVE_API_KEY": NEW}, api_keys=(OLD, NEW))
    assert (s.api_key, s.api_keys) == (OLD, (OLD, NEW))


def test_file_variants_are_read_and_stripped(tmp_path: Path) -> None:
    key = tmp_path / "api_key"
    key.write_text(f"{NEW},{OLD}\n")
    database = tmp_path / "database"
    database.write_text("  postgresql://paylive:pw@db/paylive\n")
    s = load_settings(
        {"PAYLIVE_API_KEY_FILE": str(key), "PAYLIVE_DATABASE_URL_FILE": str(database)}
    )
    assert s.api_keys == (NEW, OLD)
    assert s.database_url == "postgresql://paylive:pw@db/paylive"
    assert "PAYLIVE_API_KEY" not in s.generated


# Each setting that takes a rotation list, and two entries of it: the new, the old.
ROTATING = {
    "PAYLIVE_API_KEY": ("api_keys", NEW, OLD),
    "PAYLIVE_ADMIN_TOKEN": ("admin_tokens", f"admin-{NEW}", f"admin-{OLD}"),
    "PAYLIVE_SECRET": ("signing_secrets", f"sign-{NEW}", f"sign-{OLD}"),
    "PAYLIVE_WEBHOOK_SECRET": ("webhook_secrets", f"hook-{NEW}", f"hook-{OLD}"),
    "PAYLIVE_STRIPE_WEBHOOK_SECRET": (
        "stripe_webhook_secrets",
        "whsec_new0123456789abcdef",
        "whsec_old0123456789abcdef",
    ),
    "PAYLIVE_MERCHANT_WEBHOOK_SECRET": (
        "merchant_webhook_secrets",
        "whsec_" + "bmV3" * 8,
        "whsec_" + "b2xk" * 8,
    ),
    "PAYLIVE_METRICS_TOKEN": ("metrics_tokens", f"metrics-{NEW}", f"metrics-{OLD}"),
}
# What the Stripe and merchant webhook secrets are read with.
BESIDE = {
    "PAYLIVE_GATEWAY": "stripe",
    "PAYLIVE_STRIPE_SECRET_KEY": "sk_test_0123456789abcdef",
    "PAYLIVE_MERCHANT_WEBHOOK_URL": "https://shop.example/hooks",
}


@pytest.mark.parametrize(
    "layout",
    [
        "{new}\n{old}\n",  # one a line, as a rotation is written into a mounted file
        "\n  {new}  \r\n\n\t{old}\n\n",  # blank lines, spaces, CRLF
        "{new},\n{old}",  # commas and lines together
    ],
)
def test_a_rotation_list_in_a_file_takes_one_entry_a_line(tmp_path: Path, layout: str) -> None:
    env = dict(BESIDE)
    for name, (_, new, old) in ROTATING.items():
        path = tmp_path / name
        path.write_text(layout.format(new=new, old=old))
        env[f"{name}_FILE"] = str(path)
    s = load_settings(env)
    for name, (field, new, old) in ROTATING.items():
        assert getattr(s, field) == (new, old), name


def test_a_single_secret_in_a_file_is_read_as_before(tmp_path: Path) -> None:
    """A file of one entry is that entry, for the lists as for the settings that hold one
    value, whose content is kept whole (stripped) as it always was."""
    key = tmp_path / "api_key"
    key.write_text(f"  {NEW}\n\n")
    metrics = tmp_path / "metrics"
    metrics.write_text("\n metrics-token-0123456789 \n")
    redis_url = tmp_path / "redis"
    redis_url.write_text("redis://:pw@127.0.0.1:6380/0\n")
    s = load_settings(
        {
            "PAYLIVE_API_KEY_FILE": str(key),
            "PAYLIVE_METRICS_TOKEN_FILE": str(metrics),
            "PAYLIVE_REDIS_URL_FILE": str(redis_url),
            "PAYLIVE_SECRET": f"sign-{NEW}",
        }
    )
    assert (s.api_key, s.api_keys) == (NEW, (NEW,))
    assert s.metrics_tokens == ("metrics-token-0123456789",)
    assert s.redis_url == "redis://:pw@127.0.0.1:6380/0"


def test_an_entry_a_line_is_held_to_the_rules_of_a_list(tmp_path: Path) -> None:
    key = tmp_path / "api_key"
    key.write_text(f"{NEW}\n{NEW}\n")
    with pytest.raises(SettingsError, match="PAYLIVE_API_KEY lists the same value twice"):
        load_settings({"PAYLIVE_API_KEY_FILE": str(key)})
    key.write_text(f"{NEW}\nshort\n")
    with pytest.raises(SettingsError, match="PAYLIVE_API_KEY entry must be at least 16"):
        load_settings({"PAYLIVE_API_KEY_FILE": str(key)})


def test_a_variable_and_its_file_both_set_is_an_error_naming_both(tmp_path: Path) -> None:
    key = tmp_path / "api_key"
    key.write_text(NEW)
    with pytest.raises(SettingsError) as caught:
        load_settings({"PAYLIVE_API_KEY": OLD, "PAYLIVE_API_KEY_FILE": str(key)})
    assert str(caught.value).startswith("PAYLIVE_API_KEY and PAYLIVE_API_KEY_FILE")


@pytest.mark.parametrize("content", [None, "", "\n  \n"])
def test_a_missing_or_empty_file_is_named(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "secret"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SettingsError, match="PAYLIVE_SECRET_FILE"):
        load_settings({"PAYLIVE_SECRET_FILE": str(path)})


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, ("127.0.0.1", "::1")),
        ({"PAYLIVE_TRUSTED_PROXIES": "none"}, ()),
        ({"PAYLIVE_TRUSTED_PROXIES": "10.1.2.3/8, 192.168.0.7"}, ("10.0.0.0/8", "192.168.0.7")),
        ({"PAYLIVE_TRUSTED_PROXIES": "10.0.0.1,*"}, ("*",)),
        ({"FORWARDED_ALLOW_IPS": "172.16.0.1"}, ("172.16.0.1",)),
    ],
)
def test_trusted_proxies(env: dict[str, str], expected: tuple[str, ...]) -> None:
    assert load_settings(env).trusted_proxies == expected


def test_a_proxy_that_is_no_address_is_named() -> None:
    with pytest.raises(SettingsError, match="PAYLIVE_TRUSTED_PROXIES"):
        load_settings({"PAYLIVE_TRUSTED_PROXIES": "proxy.internal"})


SHOP_HOOKS = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="  # 30 bytes, base64


@pytest.mark.parametrize(
    ("signer", "holder"),
    [
        ("PAYLIVE_SECRET", "PAYLIVE_API_KEY"),
        ("PAYLIVE_SECRET", "PAYLIVE_ADMIN_TOKEN"),
        ("PAYLIVE_SECRET", "PAYLIVE_METRICS_TOKEN"),
        ("PAYLIVE_WEBHOOK_SECRET", "PAYLIVE_API_KEY"),
        ("PAYLIVE_WEBHOOK_SECRET", "PAYLIVE_STAFF_TOKENS"),
        ("PAYLIVE_WEBHOOK_SECRET", "PAYLIVE_SECRET"),
        ("PAYLIVE_MERCHANT_WEBHOOK_SECRET", "PAYLIVE_ADMIN_TOKEN"),
        ("PAYLIVE_MERCHANT_WEBHOOK_SECRET", "PAYLIVE_WEBHOOK_SECRET"),
    ],
)
def test_a_signing_secret_that_is_another_credential_is_refused(signer: str, holder: str) -> None:
    """Whoever holds a bearer token (or another role's signing secret) equal to a
    signing secret can sign what that secret vouches for: client secrets, tickets,
    provider webhooks. An entry of a rotation counts as much as the first."""
    shared = SHOP_HOOKS if "MERCHANT" in signer else f"shared-{NEW}"
    lists = {signer: f"sign-{NEW},{shared}" if "MERCHANT" not in signer else shared}
    held = f"vera:viewer:{shared}" if holder == "PAYLIVE_STAFF_TOKENS" else f"{OLD},{shared}"
    env = {**lists, holder: held}
    if "MERCHANT" in signer:
        env["PAYLIVE_MERCHANT_WEBHOOK_URL"] = "http://127.0.0.1:9/hooks"
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    said = str(caught.value)
    assert signer in said and holder in said and "same secret" in said, said
    assert shared not in said and NEW not in said


def test_the_stripe_webhook_secret_is_kept_apart_too() -> None:
    shared = "whsec_shared_0123456789abcdef"
    env = {
        "PAYLIVE_GATEWAY": "stripe",
        "PAYLIVE_STRIPE_SECRET_KEY": "sk_test_0123456789abcdef",
        "PAYLIVE_STRIPE_WEBHOOK_SECRET": f"whsec_new_0123456789abcdef,{shared}",
        "PAYLIVE_METRICS_TOKEN": shared,
    }
    with pytest.raises(SettingsError, match="PAYLIVE_STRIPE_WEBHOOK_SECRET") as caught:
        load_settings(env)
    assert "PAYLIVE_METRICS_TOKEN" in str(caught.value) and shared not in str(caught.value)
