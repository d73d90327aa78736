"""The Stripe gateway's pure parts: its variables, what a PaymentIntent or an event
means for the machine, Stripe's signature check, and the payment method a page sends."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from paylive.core.machine import ProviderResult
from paylive.core.signature import SignatureError
from paylive.errors import Refused
from paylive.gateway.stripe import event_result, result_of, verify_signature
from paylive.server.logs import redact
from paylive.settings import SettingsError, load_settings
from paylive.web.errors import http_status
from paylive.web.validation import parse_payment_method

STRIPE = {
    "PAYLIVE_GATEWAY": "stripe",
    "PAYLIVE_STRIPE_SECRET_KEY": "sk_test_abc",
    "PAYLIVE_STRIPE_WEBHOOK_SECRET": "whsec_one_0123456789abcdef, whsec_two_0123456789abcdef",
}
PRODUCTION = {
    "PAYLIVE_ENV": "production",
    "PAYLIVE_API_KEY": "k" * 20,
    "PAYLIVE_ADMIN_TOKEN": "a" * 20,
    "PAYLIVE_SECRET": "s" * 20,
}


def test_stripe_variables_are_read() -> None:
    s = load_settings({**STRIPE, "PAYLIVE_STRIPE_API_BASE": "http://127.0.0.1:9/"})
    assert s.gateway == "stripe" and s.stripe_secret_key == "sk_test_abc"
    assert s.stripe_webhook_secrets == ("whsec_one_0123456789abcdef", "whsec_two_0123456789abcdef")
    assert s.stripe_api_base == "http://127.0.0.1:9"
    assert load_settings({}).gateway == "sandbox"


@pytest.mark.parametrize(
    "name, value",
    [
        ("PAYLIVE_GATEWAY", "paypal"),
        ("PAYLIVE_ALLOW_SANDBOX", "yes please"),
        ("PAYLIVE_STRIPE_SECRET_KEY", "pk_test_abc"),
        ("PAYLIVE_STRIPE_SECRET_KEY", ""),
        ("PAYLIVE_STRIPE_WEBHOOK_SECRET", "secret"),
        ("PAYLIVE_STRIPE_WEBHOOK_SECRET", ""),
        # A bare prefix (a template's placeholder) or a short tail: a guessable key.
        ("PAYLIVE_STRIPE_WEBHOOK_SECRET", "whsec_"),
        ("PAYLIVE_STRIPE_WEBHOOK_SECRET", "whsec_0123456789abcdef, whsec_1"),
        ("PAYLIVE_STRIPE_WEBHOOK_SECRET", "whsec_0123456789 abcdef"),
        ("PAYLIVE_STRIPE_API_BASE", "localhost:8420"),
        ("PAYLIVE_STRIPE_PUBLISHABLE_KEY", "sk_test_abc"),
    ],
)
def test_bad_stripe_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({**STRIPE, name: value})


def test_production_refuses_the_sandbox_unless_allowed() -> None:
    with pytest.raises(SettingsError, match="PAYLIVE_GATEWAY=stripe.*PAYLIVE_ALLOW_SANDBOX"):
        load_settings({**PRODUCTION, "PAYLIVE_WEBHOOK_SECRET": "w" * 20})
    allowed = {**PRODUCTION, "PAYLIVE_WEBHOOK_SECRET": "w" * 20, "PAYLIVE_ALLOW_SANDBOX": "1"}
    assert load_settings(allowed).allow_sandbox
    # With Stripe the sandbox's webhook is off: its secret is not needed.
    assert load_settings({**PRODUCTION, **STRIPE}).production


def intent(status: str, **fields: object) -> dict[str, object]:
    return {"id": "pi_1", "status": status, "client_secret": "pi_1_secret_x", **fields}


def test_what_a_payment_intent_says() -> None:
    assert result_of(intent("requires_capture"), 2) == ProviderResult(
        2, "authorized", provider_ref="pi_1"
    )
    assert result_of(intent("succeeded"), 2) == ProviderResult(2, "succeeded", provider_ref="pi_1")
    action = result_of(intent("requires_action"), 2)
    assert action is not None and action.action == {
        "type": "authenticate",
        "provider": "stripe",
        "client_secret": "pi_1_secret_x",
    }
    declined = intent(
        "requires_payment_method",
        last_payment_error={
            "type": "card_error",
            "code": "card_declined",
            "decline_code": "stolen_card",
        },
    )
    assert result_of(declined, 1) == ProviderResult(1, "declined", "stolen_card", "pi_1")
    odd = intent("requires_payment_method", last_payment_error={"code": "Weird Code!"})
    assert result_of(odd, 1) == ProviderResult(1, "declined", "card_declined", "pi_1")
    api = intent("requires_payment_method", last_payment_error={"type": "api_error"})
    assert result_of(api, 1) == ProviderResult(1, "provider_error", provider_ref="pi_1")
    for quiet in ("requires_confirmation", "processing", "canceled", "requires_payment_method"):
        assert result_of(intent(quiet), 1) is None


def event(kind: str, obj: dict[str, object]) -> dict[str, object]:
    return {"id": "evt_1", "type": kind, "data": {"object": obj}}


OURS = {"paylive_session": "ps_abc", "paylive_attempt": "3", "paylive_key": "ps_abc:3"}


def test_events_about_paylives_payment_intents_become_results() -> None:
    found = event_result(event("payment_intent.succeeded", intent("succeeded", metadata=OURS)))
    assert found == ("evt_1", "ps_abc", ProviderResult(3, "succeeded", provider_ref="pi_1"))
    held = event_result(
        event("payment_intent.amount_capturable_updated", intent("requires_capture", metadata=OURS))
    )
    assert held is not None and held[2].outcome == "authorized"


@pytest.mark.parametrize(
    "body",
    [
        event("charge.refunded", intent("succeeded", metadata=OURS)),
        event("payment_intent.succeeded", intent("succeeded")),
        event("payment_intent.succeeded", intent("succeeded", metadata={"order": "7"})),
        event(
            "payment_intent.succeeded", intent("succeeded", metadata={**OURS, "paylive_key": "x"})
        ),
        event(
            "payment_intent.succeeded",
            intent("succeeded", metadata={**OURS, "paylive_attempt": "0"}),
        ),
        event("payment_intent.canceled", intent("canceled", metadata=OURS)),
        {"id": "evt_1", "type": "payment_intent.succeeded", "data": "nope"},
        {"type": "payment_intent.succeeded"},
    ],
)
def test_other_events_are_ignored(body: dict[str, object]) -> None:
    assert event_result(body) is None


def stripe_header(secret: str, payload: bytes, at: int) -> str:
    mac = hmac.new(secret.encode(), f"{at}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


def test_the_signature_is_stripes_with_rotation_and_tolerance() -> None:
    raw = json.dumps(event("payment_intent.succeeded", {})).encode()
    now = int(time.time())
    secrets = ("whsec_old", "whsec_new")
    verify_signature(raw, stripe_header("whsec_new", raw, now), secrets, 300)
    verify_signature(raw, stripe_header("whsec_old", raw, now - 290), secrets, 300)
    for header in (
        stripe_header("whsec_other", raw, now),
        stripe_header("whsec_new", raw, now - 301),
        stripe_header("whsec_new", raw + b" ", now),
        None,
        "garbage",
    ):
        with pytest.raises(SignatureError):
            verify_signature(raw, header, secrets, 300)
    with pytest.raises(SignatureError):
        verify_signature(b"\xff\xfe", stripe_header("whsec_new", b"\xff\xfe", now), secrets, 300)


def test_with_stripe_a_page_sends_a_payment_method_never_a_card() -> None:
    assert parse_payment_method({"stripe": "pm_1Abc"}, True, "stripe") == {"stripe": "pm_1Abc"}
    assert parse_payment_method({"stripe": "card_1Abc"}, True, "stripe") == {"stripe": "card_1Abc"}
    assert parse_payment_method(None, False, "stripe") is None
    for bad in (
        {"card": "4242424242424242"},
        {"card": "4242424242424242", "stripe": "pm_1"},
        {"stripe": "tok_visa"},
        {"stripe": "pm_" + "x" * 300},
        {"stripe": "pm_1", "extra": 1},
        "pm_1",
    ):
        with pytest.raises(Refused) as refused:
            parse_payment_method(bad, True, "stripe")
        assert refused.value.code in ("invalid_payment_method", "invalid_field")
        assert http_status(refused.value.code) == 422
    with pytest.raises(Refused) as card:
        parse_payment_method({"card": "4242424242424242"}, True, "stripe")
    assert card.value.code == "invalid_payment_method"


def test_logs_never_show_stripe_secrets() -> None:
    line = redact("confirm pi_3Abc_secret_XyZ9 with sk_live_abc and whsec_1; pk_live_ok")
    assert "pi_3Abc_secret" not in line and "sk_live" not in line and "whsec_" not in line
    assert "pk_live_ok" in line  # a publishable key is public
