"""Settings: every variable read once, bad values named, production strict."""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys

import pytest

from paylive.core.machine import Rules
from paylive.settings import Settings, SettingsError, load_settings, machine_rules

SECRETS = {
    "PAYLIVE_API_KEY": "k" * 20,
    "PAYLIVE_ADMIN_TOKEN": "a" * 20,
    "PAYLIVE_SECRET": "s" * 20,
    "PAYLIVE_WEBHOOK_SECRET": "w1-secret-0123456789,w2-secret-0123456789",
}


def test_defaults_follow_the_protocol() -> None:
    s = load_settings({})
    assert (s.attempt_timeout_ms, s.max_attempts, s.retry_delay_ms) == (30_000, 3, 2_000)
    assert (s.session_ttl_ms, s.countdown_interval_ms, s.sandbox_delay_ms) == (
        900_000,
        1_000,
        1_500,
    )
    assert (s.host, s.port, s.env, s.redis_url) == ("127.0.0.1", 8000, "development", None)
    assert set(s.generated) == set(SECRETS)
    assert s.api_key and s.admin_token and s.secret and s.webhook_secrets


def test_values_are_read() -> None:
    s = load_settings(
        {
            **SECRETS,
            "PAYLIVE_ATTEMPT_TIMEOUT_MS": "1500",
            "PORT": "9000",
            "PAYLIVE_ALLOWED_ORIGINS": "https://shop.example, https://b.example",
        }
    )
    assert s.attempt_timeout_ms == 1500 and s.port == 9000
    assert s.allowed_origins == ("https://shop.example", "https://b.example")
    assert s.webhook_secrets == ("w1-secret-0123456789", "w2-secret-0123456789")
    assert s.generated == ()


@pytest.mark.parametrize(
    "name, value",
    [
        ("PAYLIVE_ATTEMPT_TIMEOUT_MS", "soon"),
        ("PAYLIVE_ATTEMPT_TIMEOUT_MS", "-1"),
        ("PAYLIVE_MAX_ATTEMPTS", "0"),
        ("PAYLIVE_RETRY_DELAY_MS", "1.5"),
        ("PAYLIVE_COUNTDOWN_INTERVAL_MS", "5"),
        ("PORT", "70000"),
        ("PAYLIVE_ENV", "staging"),
        ("PAYLIVE_REDIS_URL", "localhost:6379"),
        ("PAYLIVE_ALLOWED_ORIGINS", "shop.example"),
        ("PAYLIVE_API_KEY", "short"),
        ("PAYLIVE_EFFECT_REVIEW_AFTER_MS", "15min"),
        ("PAYLIVE_EFFECT_RETRY_BASE_MS", "0"),
        ("PAYLIVE_EFFECT_RETRY_CAP_MS", "-5"),
        ("PAYLIVE_SANDBOX_AUTHORIZE_FIRST", "maybe"),
        ("PAYLIVE_WEBHOOK_SECRET", "x"),
        ("PAYLIVE_MAX_ATTEMPTS", "\uff13"),  # a fullwidth 3: int() takes it, we do not
        ("PAYLIVE_MAX_SOCKETS_PER_SESSION", "0"),
        ("PAYLIVE_MAX_CONNECTIONS", "none"),
        ("PAYLIVE_HEADER_TIMEOUT_MS", "10"),
        ("PAYLIVE_DEMO_PER_MINUTE", "0"),
        ("PAYLIVE_REDIS_SHARDED_PUBSUB", "sometimes"),
        ("PAYLIVE_LOOP_LAG_INTERVAL_MS", "-1"),
        ("PAYLIVE_SHUTDOWN_GRACE_MS", "600001"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})


def test_production_refuses_to_start_without_secrets() -> None:
    with pytest.raises(SettingsError, match="PAYLIVE_API_KEY.*PAYLIVE_SECRET"):
        load_settings({"PAYLIVE_ENV": "production"})
    production = {**SECRETS, "PAYLIVE_ENV": "production", "PAYLIVE_ALLOW_SANDBOX": "1"}
    assert load_settings(production).production


def test_redis_requires_a_shared_secret() -> None:
    with pytest.raises(SettingsError, match="PAYLIVE_SECRET"):
        load_settings({"PAYLIVE_REDIS_URL": "redis://127.0.0.1:1"})


def test_serve_reports_bad_configuration_clearly() -> None:
    env = {"PATH": "/usr/bin:/bin", "PAYLIVE_MAX_ATTEMPTS": "many"}
    done = subprocess.run(
        [sys.executable, "-m", "paylive", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "PAYLIVE_MAX_ATTEMPTS must be an integer" in done.stderr


def test_workers_need_redis() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "paylive", "serve", "--workers", "2", "--port", "1"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--workers above 1 needs PAYLIVE_REDIS_URL" in done.stderr


def test_redis_limits_are_settings() -> None:
    s = load_settings({"PAYLIVE_REDIS_POOL_SIZE": "8", "PAYLIVE_REDIS_TIMEOUT_MS": "250"})
    assert (s.redis_pool_size, s.redis_timeout_ms) == (8, 250)
    with pytest.raises(SettingsError, match="PAYLIVE_REDIS_POOL_SIZE"):
        load_settings({"PAYLIVE_REDIS_POOL_SIZE": "0"})


def test_the_machine_rules_come_from_settings_alone() -> None:
    rules = machine_rules(load_settings({}))
    assert rules == Rules(
        attempt_timeout_ms=30_000, max_attempts=3, retry_delay_ms=2_000, session_ttl_ms=900_000
    )
    tuned = machine_rules(
        load_settings({"PAYLIVE_MAX_ATTEMPTS": "5", "PAYLIVE_RETRY_DELAY_MS": "0"})
    )
    assert (tuned.max_attempts, tuned.retry_delay_ms) == (5, 0)


PARTS = [
    name
    for name, value in vars(Settings).items()
    if isinstance(value, functools.cached_property) and name != "rules"
]


def test_each_part_copies_its_fields_from_the_settings() -> None:
    # A part holds no default of its own: each field is the Settings field (or property)
    # of its name, as the environment set it.
    s = load_settings({"PAYLIVE_HISTORY_CAP": "70", "PAYLIVE_REDIS_POOL_SIZE": "3"}, port=9000)
    assert {"engine", "redis", "sandbox", "stripe", "credentials"} <= set(PARTS)
    for name in PARTS:
        part = getattr(s, name)
        assert part is getattr(s, name), "a part is made once"
        for f in dataclasses.fields(part):
            assert f.default is dataclasses.MISSING, f"{name}.{f.name} has a default"
            assert getattr(part, f.name) == getattr(s, f.name), f"{name}.{f.name}"
    assert (s.engine.history_cap, s.redis.redis_pool_size) == (70, 3)
    assert s.sandbox.webhook_target == "http://127.0.0.1:9000/webhooks/sandbox"
    assert s.service.rules == machine_rules(s)
    # A copy with a field changed makes its parts anew.
    assert dataclasses.replace(s, history_cap=9).engine.history_cap == 9


def test_the_outbox_is_configured_by_its_variables() -> None:
    s = load_settings({})
    assert (s.effect_review_after_ms, s.effect_retry_base_ms, s.effect_retry_cap_ms) == (
        900_000,
        1_000,
        60_000,
    )
    assert s.sandbox_authorize_first is False
    tuned = load_settings(
        {
            "PAYLIVE_EFFECT_REVIEW_AFTER_MS": "60000",
            "PAYLIVE_EFFECT_RETRY_BASE_MS": "50",
            "PAYLIVE_EFFECT_RETRY_CAP_MS": "50",
            "PAYLIVE_SANDBOX_AUTHORIZE_FIRST": "true",
        }
    )
    rules = machine_rules(tuned)
    assert (rules.effect_review_after_ms, rules.effect_retry_base_ms) == (60_000, 50)
    assert rules.effect_retry_cap_ms == 50 and tuned.sandbox_authorize_first is True
    with pytest.raises(SettingsError, match="PAYLIVE_EFFECT_RETRY_CAP_MS must be at least"):
        load_settings({"PAYLIVE_EFFECT_RETRY_BASE_MS": "5000", "PAYLIVE_EFFECT_RETRY_CAP_MS": "10"})


def test_every_webhook_secret_entry_is_long_enough() -> None:
    long = "w" * 16
    assert load_settings({**SECRETS, "PAYLIVE_WEBHOOK_SECRET": long}).webhook_secrets == (long,)
    for raw in ("x", f"{long},x", f"x,{long}", "w" * 15):
        with pytest.raises(SettingsError, match="PAYLIVE_WEBHOOK_SECRET.*16 characters"):
            load_settings({**SECRETS, "PAYLIVE_WEBHOOK_SECRET": raw, "PAYLIVE_ENV": "production"})


def test_connection_bounds_are_settings() -> None:
    s = load_settings({})
    assert (s.header_timeout_ms, s.max_connections, s.max_sockets_per_session) == (
        10_000,
        10_000,
        8,
    )
    tuned = load_settings(
        {
            "PAYLIVE_HEADER_TIMEOUT_MS": "500",
            "PAYLIVE_MAX_CONNECTIONS": "50",
            "PAYLIVE_MAX_SOCKETS_PER_SESSION": "2",
            "PAYLIVE_DEMO_PER_MINUTE": "3",
        }
    )
    assert (
        tuned.header_timeout_ms,
        tuned.max_connections,
        tuned.max_sockets_per_session,
        tuned.demo_per_minute,
    ) == (500, 50, 2, 3)


NEW_WHSEC = "whsec_" + "bmV3" * 8  # 24 bytes
OLD_WHSEC = "whsec_" + "b2xk" * 8


def test_merchant_webhook_and_archive_variables() -> None:
    s = load_settings(
        {
            "PAYLIVE_MERCHANT_WEBHOOK_URL": "https://shop.example/paylive",
            "PAYLIVE_MERCHANT_WEBHOOK_SECRET": f"{NEW_WHSEC}, {OLD_WHSEC}",
            "PAYLIVE_MERCHANT_EVENTS": "all",
            "PAYLIVE_DATABASE_URL": "postgresql://paylive@db.internal/paylive",
            "PAYLIVE_ARCHIVE_DAYS": "30",
            "PAYLIVE_REDIS_RETENTION_MS": "3600000",
        }
    )
    assert s.merchant_webhook_url == "https://shop.example/paylive"
    assert s.merchant_webhook_secrets == (NEW_WHSEC, OLD_WHSEC)
    assert (s.merchant_events, s.archive_days) == ("all", 30)
    assert s.database_url == "postgresql://paylive@db.internal/paylive"
    assert s.retention_after_end_ms == 3_600_000
    defaults = load_settings({})
    assert (defaults.merchant_webhook_url, defaults.database_url) == (None, None)
    assert (defaults.merchant_events, defaults.archive_days) == ("outcomes", 400)
    assert defaults.retention_after_end_ms == 24 * 3600 * 1000


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"PAYLIVE_MERCHANT_WEBHOOK_URL": "ftp://x"}, "PAYLIVE_MERCHANT_WEBHOOK_URL"),
        ({"PAYLIVE_MERCHANT_WEBHOOK_URL": "https://x"}, "PAYLIVE_MERCHANT_WEBHOOK_SECRET"),
        # Only commas once read as no secret at all: every webhook went out unsigned.
        (
            {"PAYLIVE_MERCHANT_WEBHOOK_URL": "https://x", "PAYLIVE_MERCHANT_WEBHOOK_SECRET": " , "},
            "PAYLIVE_MERCHANT_WEBHOOK_SECRET lists no value",
        ),
        ({"PAYLIVE_MERCHANT_WEBHOOK_SECRET": f"{NEW_WHSEC},short"}, "whsec_"),
        ({"PAYLIVE_MERCHANT_WEBHOOK_SECRET": "whsec_" + "A" * 12}, "24 to 64 bytes"),
        ({"PAYLIVE_MERCHANT_WEBHOOK_SECRET": "whsec_not*base64*at*all*0123456789"}, "base64"),
        ({"PAYLIVE_MERCHANT_EVENTS": "some"}, "PAYLIVE_MERCHANT_EVENTS"),
        ({"PAYLIVE_DATABASE_URL": "mysql://u:pw@h/db"}, "PAYLIVE_DATABASE_URL"),
        ({"PAYLIVE_ARCHIVE_DAYS": "0"}, "PAYLIVE_ARCHIVE_DAYS"),
        ({"PAYLIVE_REDIS_RETENTION_MS": "60000"}, "needs PAYLIVE_DATABASE_URL"),
    ],
)
def test_bad_merchant_and_archive_values_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as caught:
        load_settings(env)
    assert "pw" not in str(caught.value)  # a database password never reaches the message


def test_the_shutdown_grace_keeps_uvicorns_default() -> None:
    assert load_settings({}).shutdown_grace_ms == 10_000
    assert load_settings({"PAYLIVE_SHUTDOWN_GRACE_MS": "0"}).shutdown_grace_ms == 0


def test_speed_settings() -> None:
    s = load_settings({})
    assert s.redis_sharded_pubsub is True and s.loop_lag_interval_ms == 25
    tuned = load_settings(
        {"PAYLIVE_REDIS_SHARDED_PUBSUB": "0", "PAYLIVE_LOOP_LAG_INTERVAL_MS": "0"}
    )
    assert tuned.redis_sharded_pubsub is False and tuned.loop_lag_interval_ms == 0


def test_serve_help_lists_every_variable_of_the_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from paylive.server.cli import main
    from paylive.settings import VARIABLES

    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    helped = capsys.readouterr().out
    for var in VARIABLES:
        assert f"  {var.env} (default: {var.default}" in helped
    assert "PAYLIVE_MAX_ATTEMPTS (default: 3, 1..20)" in helped


@pytest.mark.parametrize(
    "name",
    [
        "PAYLIVE_ALLOW_SANDBOX",
        "PAYLIVE_SANDBOX_AUTHORIZE_FIRST",
        "PAYLIVE_ADAPTIVE_IN_FLIGHT",
        "PAYLIVE_REDIS_SHARDED_PUBSUB",
    ],
)
def test_every_yes_no_variable_is_read_alike(name: str) -> None:
    from paylive.settings import VARIABLES

    field = next(var.field for var in VARIABLES if var.env == name)
    assert field is not None
    for raw, value in (("1", True), ("TRUE", True), ("yes", True), ("0", False), ("No", False)):
        assert getattr(load_settings({name: raw}), field) is value
    with pytest.raises(SettingsError, match=f"{name} must be 1 or 0 \\(true or false\\)"):
        load_settings({name: "maybe"})


def test_merchant_event_modes_are_the_cores() -> None:
    from paylive.core.merchant import MODES

    for mode in MODES:
        assert load_settings({"PAYLIVE_MERCHANT_EVENTS": mode}).merchant_events == mode
    with pytest.raises(SettingsError, match="must be outcomes or all, got 'some'"):
        load_settings({"PAYLIVE_MERCHANT_EVENTS": "some"})
