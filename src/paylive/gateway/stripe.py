"""The Stripe gateway: paylive's rules on PaymentIntents, through Stripe's own library
(``StripeClient`` on its httpx-based async HTTP client).

- An attempt is one PaymentIntent for the session's amount and currency, with
  ``capture_method=manual`` and metadata naming the session, the attempt and its key.
  It is created unconfirmed; its id is saved on the attempt (``provider_ref``) before
  it is confirmed, so an outcome lost later can always be looked up by id, and a
  PaymentIntent paylive never recorded is never confirmed (it cannot take money).
- Confirming authorizes: the machine then puts a capture in the session's outbox (or
  a release, when the session has moved on), and the capture's success is the
  attempt's success.
- A void cancels the PaymentIntent; one that turns out captured is "charged".
- A refund is a Refund on the PaymentIntent.

Every call that changes something carries an idempotency key: the charge's are made
from the attempt's (``<key>:create``, ``<key>:confirm``), the void a retry or cancel
waits for is ``<key>:cancel``, and a capture, release or refund of the outbox carries
the effect's own (``<key>:capture``, ``<key>:void``, ``<key>:refund``), the same on
every try. Stripe refuses one key for two different requests, and replays the first
answer when a request is repeated. localstripe, the test server, does not
replay (a repeated confirm is refused), so after any answer that does not say what
happened the gateway reads the PaymentIntent itself and goes by its status: right on
Stripe and on localstripe alike.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

import stripe

from ..core.commands import ProviderResult
from ..core.decision import Charge
from ..core.session import attempt_of
from ..core.signature import SignatureError
from ..settings import StripeSettings
from ..telemetry import context, tracing
from .base import ChargeReply, Gateway, GatewayError, Remember

log = logging.getLogger("paylive.stripe")

SESSION_META = "paylive_session"
ATTEMPT_META = "paylive_attempt"
KEY_META = "paylive_key"
EFFECT_META = "paylive_effect"
# The trace of the charge, so that Stripe's webhook about it continues that trace.
TRACE_META = "paylive_traceparent"

PROVIDER_REQUEST_ID = "paylive.provider.request_id"

_CODE = re.compile(r"^[a-z0-9_]{1,64}$")
_SESSION = re.compile(r"^ps_[A-Za-z0-9]{1,61}$")
# ASCII digits only: str.isdigit() takes "²", which int() then refuses.
_ATTEMPT = re.compile(r"[0-9]{1,4}")


class StripeGateway(Gateway):
    def __init__(self, settings: StripeSettings) -> None:
        self._http = stripe.HTTPXClient(timeout=settings.stripe_timeout_s)
        base = settings.stripe_api_base
        client = stripe.StripeClient(
            settings.stripe_secret_key,
            base_addresses={"api": base} if base else None,
            http_client=self._http,
            max_network_retries=settings.stripe_network_retries,
        )
        self._intents = client.v1.payment_intents
        self._refunds = client.v1.refunds

    @staticmethod
    def _options(idempotency_key: str) -> stripe.RequestOptions:
        return {"idempotency_key": idempotency_key}

    async def charge(self, charge: Charge, remember: Remember) -> ChargeReply | ProviderResult:
        session_id, number = attempt_of(charge.key)
        try:
            intent = await self._intents.create_async(
                params={
                    "amount": charge.amount,
                    "currency": charge.currency.lower(),
                    "payment_method": str(charge.payment_method.get("stripe")),
                    # Cards only, confirmed here: no payment method that would send the
                    # customer away (so no return_url is needed).
                    "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
                    "capture_method": "manual",
                    "metadata": _metadata(
                        {SESSION_META: session_id, ATTEMPT_META: str(number), KEY_META: charge.key}
                    ),
                },
                options=self._options(f"{charge.key}:create"),
            )
            _seen(intent)
        except stripe.StripeError as exc:
            # Nothing was confirmed, so nothing can be charged: a known failure.
            log.warning("stripe: could not create the payment of %s: %s", charge.key, _say(exc))
            return ProviderResult(number, "provider_error")
        ref = str(intent.id)
        if not await remember(ref):
            log.info("stripe: %s ended before %s was confirmed; it never will be", charge.key, ref)
            return ChargeReply.ACCEPTED
        try:
            intent = await self._intents.confirm_async(
                ref, options=self._options(f"{charge.key}:confirm")
            )
            _seen(intent)
        except stripe.CardError as exc:
            return _declined(number, ref, exc)
        except stripe.StripeError as exc:
            log.warning(
                "stripe: confirming %s (%s) said nothing sure: %s", charge.key, ref, _say(exc)
            )
            looked = await self.lookup(charge.key, ref)
            return looked or ProviderResult(number, "network_error", provider_ref=ref)
        return result_of(intent.to_dict(), number) or ChargeReply.ACCEPTED

    async def void(self, key: str, ref: str | None, idempotency_key: str | None = None) -> bool:
        if ref is None:
            return False  # never confirmed: it cannot take money
        options = self._options(idempotency_key or f"{key}:cancel")
        try:
            _seen(await self._intents.cancel_async(ref, options=options))
            return False
        except stripe.InvalidRequestError:
            pass  # not cancellable in its state (or localstripe refusing a repeat): look
        except stripe.StripeError as exc:
            raise GatewayError(f"stripe: cannot cancel {ref}: {_say(exc)}") from exc
        status = (await self._retrieve(ref))["status"]
        if status == "succeeded":
            return True
        if status == "canceled":
            return False
        raise GatewayError(f"stripe: {ref} is {status}: neither cancelled nor charged")

    async def capture(self, key: str, ref: str | None, idempotency_key: str) -> bool:
        if ref is None:
            return False
        try:
            intent = await self._intents.capture_async(ref, options=self._options(idempotency_key))
            _seen(intent)
            if intent.status == "succeeded":
                return True
        except stripe.InvalidRequestError:
            pass  # captured already (localstripe refuses a repeat) or released: look
        except stripe.StripeError as exc:
            raise GatewayError(f"stripe: cannot capture {ref}: {_say(exc)}") from exc
        status = (await self._retrieve(ref))["status"]
        if status == "succeeded":
            return True
        if status in ("canceled", "requires_payment_method"):
            return False
        raise GatewayError(f"stripe: {ref} is {status} after a capture")

    async def refund(
        self, key: str, ref: str | None, idempotency_key: str, amount: int | None = None
    ) -> None:
        if ref is None:
            raise GatewayError(f"stripe: no PaymentIntent is recorded for {key}")
        try:
            # Stripe would replay a repeated refund by its key; localstripe would refund
            # twice, so look for this effect's refund first.
            done = await self._refunds.list_async(params={"payment_intent": ref, "limit": 100})
            for made in done.data:
                if (made.to_dict().get("metadata") or {}).get(EFFECT_META) == idempotency_key:
                    return
            params: dict[str, Any] = {
                "payment_intent": ref,
                "metadata": {EFFECT_META: idempotency_key},
            }
            if amount is not None:
                params["amount"] = amount
            _seen(
                await self._refunds.create_async(
                    params=params,  # type: ignore[arg-type]
                    options=self._options(idempotency_key),
                )
            )
        except stripe.InvalidRequestError as exc:
            if exc.code == "charge_already_refunded":
                return
            raise GatewayError(f"stripe: cannot refund {ref}: {_say(exc)}") from exc
        except stripe.StripeError as exc:
            raise GatewayError(f"stripe: cannot refund {ref}: {_say(exc)}") from exc

    async def lookup(self, key: str, ref: str | None) -> ProviderResult | None:
        if ref is None:
            return None
        try:
            intent = await self._retrieve(ref)
        except GatewayError as exc:
            log.warning("%s", exc)
            return None
        return result_of(intent, attempt_of(key)[1])

    async def _retrieve(self, ref: str) -> dict[str, Any]:
        try:
            intent = await self._intents.retrieve_async(ref)
            _seen(intent)
            return intent.to_dict()
        except stripe.StripeError as exc:
            raise GatewayError(f"stripe: cannot read {ref}: {_say(exc)}") from exc

    async def close(self) -> None:
        await self._http.close_async()


# What a PaymentIntent says, as a result the machine applies ------------------------


def result_of(intent: Mapping[str, Any], number: int) -> ProviderResult | None:
    """The result a PaymentIntent's status stands for; None when it says nothing yet
    (created, processing) or nothing paylive acts on (cancelled: paylive did that)."""
    ref = intent.get("id") if isinstance(intent.get("id"), str) else None
    status = intent.get("status")
    if status == "succeeded":
        return ProviderResult(number, "succeeded", provider_ref=ref)
    if status == "requires_capture":
        return ProviderResult(number, "authorized", provider_ref=ref)
    if status == "requires_action":
        secret = intent.get("client_secret")
        if not isinstance(secret, str):
            return None
        # What the page needs: Stripe.js completes the step with the client secret.
        action = {"type": "authenticate", "provider": "stripe", "client_secret": secret}
        return ProviderResult(number, "requires_action", provider_ref=ref, action=action)
    error = intent.get("last_payment_error")
    if status == "requires_payment_method" and isinstance(error, Mapping):
        return _failure(number, ref, error)
    return None


def _failure(number: int, ref: str | None, error: Mapping[str, Any]) -> ProviderResult:
    code = error.get("decline_code") or error.get("code")
    if error.get("type") in (None, "card_error") and isinstance(code, str):
        return ProviderResult(number, "declined", _decline_code(code), ref)
    return ProviderResult(number, "provider_error", provider_ref=ref)


def _declined(number: int, ref: str, exc: stripe.CardError) -> ProviderResult:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    error = body.get("error")
    declined = error.get("decline_code") if isinstance(error, dict) else None
    code = declined or exc.code or "card_declined"
    return ProviderResult(number, "declined", _decline_code(str(code)), ref)


def _decline_code(code: str) -> str:
    return code if _CODE.fullmatch(code) else "card_declined"


def _metadata(values: dict[str, str]) -> dict[str, str]:
    traceparent = context.current_traceparent()
    if traceparent is not None:
        values[TRACE_META] = traceparent
    return values


def _seen(answer: Any) -> None:
    """Name Stripe's request id on the provider call's span (support asks for it)."""
    response = getattr(answer, "last_response", None)
    tracing.annotate(PROVIDER_REQUEST_ID, getattr(response, "request_id", None))


def event_trace(event: Mapping[str, Any]) -> str | None:
    """The traceparent of the charge an event is about, when paylive sent one."""
    data = event.get("data")
    intent = data.get("object") if isinstance(data, Mapping) else None
    metadata = intent.get("metadata") if isinstance(intent, Mapping) else None
    found = metadata.get(TRACE_META) if isinstance(metadata, Mapping) else None
    return found if isinstance(found, str) else None


def _say(exc: stripe.StripeError) -> str:
    """An error for the log: its class, status and code, never the request."""
    tracing.annotate(PROVIDER_REQUEST_ID, exc.request_id)
    return f"{type(exc).__name__} {exc.http_status or '-'} {exc.code or ''}".strip()


# Webhooks -------------------------------------------------------------------------


def verify_signature(
    raw: bytes, header: str | None, secrets: Sequence[str], tolerance_s: int
) -> None:
    """Stripe's own check of ``Stripe-Signature``: any configured secret (several while
    rotating) signing a fresh enough timestamp. Raises SignatureError."""
    try:
        payload = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureError("the body is not UTF-8") from None
    if header is not None and not header.isascii():
        # Stripe's library compares with hmac.compare_digest, which raises TypeError
        # (not its SignatureVerificationError) for a str that is not ASCII.
        raise SignatureError("the Stripe-Signature header is not ASCII")
    reason = "no webhook secret is configured"
    matched = False
    # Every secret is tried, so the time taken does not tell which one matched.
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(payload, header, secret, tolerance_s)
            matched = True
        except stripe.SignatureVerificationError as exc:
            reason = str(exc.user_message or "bad signature").split(".")[0]
    if not matched:
        raise SignatureError(reason)
    # Stripe's library refuses only a timestamp too old; the contract's skew is either
    # way (docs/protocol.md 3.5), as the sandbox's webhooks have it.
    if _signed_at(header) > time.time() + tolerance_s:
        raise SignatureError(f"the timestamp is more than {tolerance_s} s ahead")


def _signed_at(header: str | None) -> int:
    """The ``t=`` of a ``Stripe-Signature`` the library verified, read as it reads it
    (the first ``t``; ``a=b=c`` is ``a`` and ``b``)."""
    for part in (header or "").split(","):
        name, value = [*part.split("=", 2), ""][:2]
        if name == "t":
            return int(value)
    raise SignatureError("the Stripe-Signature header has no timestamp")


def event_result(event: Mapping[str, Any]) -> tuple[str, str, ProviderResult] | None:
    """(event id, session id, result) for an event about one of paylive's PaymentIntents;
    None for any other event (answered 200 so that Stripe does not resend it)."""
    event_id = event.get("id")
    kind = event.get("type")
    data = event.get("data")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 128:
        return None
    if not isinstance(kind, str) or not kind.startswith("payment_intent."):
        return None
    intent = data.get("object") if isinstance(data, Mapping) else None
    metadata = intent.get("metadata") if isinstance(intent, Mapping) else None
    if not isinstance(intent, Mapping) or not isinstance(metadata, Mapping):
        return None
    session_id = metadata.get(SESSION_META)
    attempt = metadata.get(ATTEMPT_META)
    if not isinstance(session_id, str) or not _SESSION.fullmatch(session_id):
        return None
    if (
        not isinstance(attempt, str)
        or not _ATTEMPT.fullmatch(attempt)
        or not 1 <= int(attempt) <= 1000
    ):
        return None
    if metadata.get(KEY_META) != f"{session_id}:{attempt}":
        return None
    result = result_of(intent, int(attempt))
    return None if result is None else (event_id, session_id, result)
