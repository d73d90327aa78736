"""Validation at the edge: every body and command field, with a 422 that names it.

Shared by the HTTP routes and the socket commands so both refuse the same things
with the same codes.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from ..core.codec import DecodeError, loads_json
from ..core.machine import ProviderResult
from ..core.protocol import ErrorCode
from ..errors import Refused

# ISO 4217 active codes (2024), so "EURO" or "XXX" cannot open a session.
CURRENCIES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN
    BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD
    FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY
    KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP
    MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR
    RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
    TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF XPF YER
    ZAR ZMW ZWG
    """.split()
)

MAX_AMOUNT = 10**12
MAX_METADATA_KEYS = 20
MAX_METADATA_BYTES = 4096
# Integers a JavaScript page (and msgpack) carry exactly.
MAX_SAFE_INTEGER = 2**53 - 1
# Digits are ASCII digits: str.isdigit() and int() also take "²" and fullwidth digits.
_DIGITS = re.compile(r"[0-9]+")
_CARD = re.compile(r"[0-9]{12,19}")
_ORDER_ID = re.compile(r"^[\x21-\x7e]{1,128}$")
_DECLINE_CODE = re.compile(r"^[a-z0-9_]{1,64}$")
_PROVIDER_REF = re.compile(r"^[\x21-\x7e]{1,128}$")
# A PaymentMethod made by Stripe.js (pm_...); Stripe also takes a token's card (card_...).
_STRIPE_METHOD = re.compile(r"^(pm|card)_[A-Za-z0-9_]{1,200}$")


def invalid(field: str, message: str, code: ErrorCode = ErrorCode.INVALID_FIELD) -> Refused:
    return Refused(code, f"{field}: {message}")


def parse_json(raw: bytes, max_depth: int) -> dict[str, Any]:
    """A body must be a JSON object (400 ``invalid_json`` otherwise, nesting too deep
    included); a number that is not finite is 422 ``invalid_field``."""
    try:
        body = loads_json(raw, max_depth) if raw else None
    except DecodeError as exc:
        raise Refused(ErrorCode.INVALID_JSON, f"the body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise Refused(ErrorCode.INVALID_JSON, "the body must be a JSON object")
    return body


def ascii_int(raw: str) -> int | None:
    """``raw`` as a non-negative integer of at most 18 ASCII digits, else None."""
    return int(raw) if len(raw) <= 18 and _DIGITS.fullmatch(raw) else None


# A query parameter's number (the events API's cursor and page, the staff searches).
_QUERY_DIGITS = re.compile(r"^[0-9]{1,19}$")
# An id sent in a query or a path: 1 to 128 printable ASCII characters.
PRINTABLE_ID = re.compile(r"^[\x21-\x7e]{1,128}$")


# Headers that say who asks, whether a command runs once and where a stream resumes:
# given twice they are ambiguous (Starlette reads the first, a proxy may read the last),
# so neither is taken.
SINGLE_HEADERS = (b"authorization", b"idempotency-key", b"last-event-id")


def repeated_header(headers: Iterable[tuple[bytes, bytes]]) -> Refused | None:
    """400 ``invalid_request`` for a ``SINGLE_HEADERS`` header sent more than once."""
    seen: set[bytes] = set()
    for name, _ in headers:
        if name in SINGLE_HEADERS:
            if name in seen:
                return Refused(
                    ErrorCode.INVALID_REQUEST, f"the {name.decode()} header may be sent once"
                )
            seen.add(name)
    return None


def repeated_parameter(query_string: bytes) -> Refused | None:
    """422 ``invalid_field`` naming a query parameter given more than once: Starlette
    keeps the last, so ``limit=5&limit=abc`` was refused and ``limit=abc&limit=5`` not."""
    if b"&" not in query_string:
        return None
    seen: set[str] = set()
    for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in seen:
            return invalid(name[:64], "may be given once")
        seen.add(name)
    return None


def query_int(params: Mapping[str, str], name: str, lo: int, hi: int) -> int | None:
    """The query parameter ``name``, a whole number from ``lo`` to ``hi``, or None."""
    raw = params.get(name)
    if raw is None:
        return None
    if not _QUERY_DIGITS.fullmatch(raw) or not lo <= int(raw) <= hi:
        raise invalid(name, f"must be an integer from {lo} to {hi}")
    return int(raw)


def query_id(params: Mapping[str, str], name: str) -> str | None:
    """The query parameter ``name``, an id (``PRINTABLE_ID``), or None when absent or empty."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not PRINTABLE_ID.fullmatch(raw):
        raise invalid(name, "must be 1 to 128 printable ASCII characters")
    return raw


def parse_digits(raw: str, field: str, lo: int, hi: int) -> int:
    """A query parameter that must be a whole number from ``lo`` to ``hi``."""
    value = ascii_int(raw)
    if value is None or not lo <= value <= hi:
        raise invalid(field, f"must be an integer from {lo} to {hi} in ASCII digits")
    return value


def _int(body: dict[str, Any], field: str, lo: int, hi: int) -> int:
    value = body.get(field)
    if value is None:
        raise invalid(field, "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(field, "must be an integer")
    if not lo <= value <= hi:
        raise invalid(field, f"must be between {lo} and {hi}")
    return value


def _only(body: dict[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise invalid(extra[0], "is not a known field")


def parse_create(body: dict[str, Any]) -> tuple[str, int, str, dict[str, Any]]:
    _only(body, {"order_id", "amount", "currency", "metadata"})
    order_id = body.get("order_id")
    if not isinstance(order_id, str) or not _ORDER_ID.fullmatch(order_id):
        raise invalid("order_id", "must be 1 to 128 printable ASCII characters without spaces")
    amount = _int(body, "amount", 1, MAX_AMOUNT)
    currency = body.get("currency")
    if not isinstance(currency, str) or currency not in CURRENCIES:
        raise invalid(
            "currency",
            "must be an ISO 4217 code in upper case, such as EUR",
            ErrorCode.INVALID_CURRENCY,
        )
    metadata = body.get("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise invalid("metadata", "must be an object")
    if len(metadata) > MAX_METADATA_KEYS:
        raise invalid("metadata", f"may have at most {MAX_METADATA_KEYS} keys")
    for key, value in metadata.items():
        if not 1 <= len(key) <= 40:
            raise invalid("metadata", "keys must be 1 to 40 characters")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise invalid(f"metadata.{key}", "must be a string, number, boolean or null")
        if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
            raise invalid(f"metadata.{key}", f"must be an integer within ±{MAX_SAFE_INTEGER}")
    if len(json.dumps(metadata)) > MAX_METADATA_BYTES:
        raise invalid("metadata", f"must be at most {MAX_METADATA_BYTES} bytes as JSON")
    return order_id, amount, currency, metadata


def luhn_ok(number: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(number)):
        digit = ord(ch) - 48
        if i % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def parse_payment_method(
    value: Any, required: bool, gateway: str = "sandbox"
) -> dict[str, Any] | None:
    if value is None:
        if required:
            raise invalid("payment_method", "is required")
        return None
    if gateway == "stripe":
        return _stripe_method(value)
    if not isinstance(value, dict):
        raise invalid("payment_method", 'must be an object such as {"card": "4242..."}')
    _only_prefixed(value, {"card"}, "payment_method")
    card = value.get("card")
    if not isinstance(card, str):
        raise invalid("payment_method.card", "must be a string of digits")
    card = card.replace(" ", "")
    if not _CARD.fullmatch(card):
        raise invalid("payment_method.card", "must be 12 to 19 digits", ErrorCode.INVALID_CARD)
    if not luhn_ok(card):
        raise invalid("payment_method.card", "fails the Luhn check", ErrorCode.INVALID_CARD)
    return {"card": card}


def _stripe_method(value: Any) -> dict[str, Any]:
    """With Stripe, card data never reaches paylive: the page makes a PaymentMethod."""
    shape = 'must be a PaymentMethod made by Stripe.js, as {"stripe": "pm_..."}'
    if not isinstance(value, dict):
        raise invalid("payment_method", shape, ErrorCode.INVALID_PAYMENT_METHOD)
    if "card" in value:
        raise invalid(
            "payment_method.card",
            "card numbers are refused with the Stripe gateway (they must never reach this "
            'server): send a PaymentMethod made by Stripe.js, as {"stripe": "pm_..."}',
            ErrorCode.INVALID_PAYMENT_METHOD,
        )
    _only_prefixed(value, {"stripe"}, "payment_method")
    method = value.get("stripe")
    if not isinstance(method, str) or not _STRIPE_METHOD.fullmatch(method):
        raise invalid("payment_method.stripe", shape, ErrorCode.INVALID_PAYMENT_METHOD)
    return {"stripe": method}


def _only_prefixed(body: dict[str, Any], allowed: set[str], prefix: str) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise invalid(f"{prefix}.{extra[0]}", "is not a known field")


def parse_attempt(body: dict[str, Any], gateway: str = "sandbox") -> dict[str, Any] | None:
    _only(body, {"payment_method"})
    return parse_payment_method(body.get("payment_method"), False, gateway)


def parse_interrupt(body: dict[str, Any]) -> str:
    _only(body, {"reason"})
    reason = body.get("reason", "network_error")
    if reason != "network_error":
        raise invalid("reason", "must be network_error (the only interruption a client can report)")
    return reason


OUTCOMES = ("succeeded", "failed", "cancelled", "expired")


def parse_seen(body: dict[str, Any]) -> str:
    """The outcome a checkout drew (``seen``, docs/protocol.md section 10)."""
    _only(body, {"status"})
    status = body.get("status")
    if status not in OUTCOMES:
        raise invalid(
            "status", "must be the outcome drawn: succeeded, failed, cancelled or expired"
        )
    return str(status)


def parse_complete(body: dict[str, Any]) -> ProviderResult:
    _only(body, {"attempt", "outcome", "decline_code", "provider_ref"})
    attempt = _int(body, "attempt", 1, 1000)
    outcome = body.get("outcome")
    if outcome not in ("succeeded", "declined", "provider_error"):
        raise invalid("outcome", "must be succeeded, declined or provider_error")
    decline_code = body.get("decline_code")
    if decline_code is not None and (
        not isinstance(decline_code, str) or not _DECLINE_CODE.fullmatch(decline_code)
    ):
        raise invalid("decline_code", "must be a short lower-case code such as card_declined")
    if outcome != "declined" and decline_code is not None:
        raise invalid("decline_code", "only goes with outcome declined")
    provider_ref = body.get("provider_ref")
    if provider_ref is not None and (
        not isinstance(provider_ref, str) or not _PROVIDER_REF.fullmatch(provider_ref)
    ):
        raise invalid("provider_ref", "must be 1 to 128 printable characters")
    return ProviderResult(attempt, outcome, decline_code, provider_ref)


def parse_webhook(body: dict[str, Any]) -> tuple[str, str, ProviderResult]:
    """(event id, session id, result) from a provider webhook body."""
    event_id = body.get("id")
    if not isinstance(event_id, str) or not 1 <= len(event_id) <= 128:
        raise invalid("id", "must be the event id")
    session_id = body.get("session")
    if not isinstance(session_id, str) or not session_id.startswith("ps_") or len(session_id) > 64:
        raise invalid("session", "must be a session id")
    attempt = _int(body, "attempt", 1, 1000)
    key = body.get("idempotency_key")
    if key is not None and key != f"{session_id}:{attempt}":
        raise invalid("idempotency_key", "does not match the session and attempt")
    kind = body.get("type")
    failure = body.get("failure")
    if kind == "payment.succeeded":
        outcome = "succeeded"
    elif kind == "payment.authorized":
        outcome = "authorized"  # the sandbox authorizing first (docs/protocol.md 3.2)
    elif kind == "payment.failed" and failure in ("declined", "provider_error"):
        outcome = failure
    else:
        raise invalid(
            "type",
            "must be payment.succeeded, payment.authorized, or payment.failed with a failure",
        )
    decline_code = body.get("decline_code") if outcome == "declined" else None
    if decline_code is not None and (
        not isinstance(decline_code, str) or not _DECLINE_CODE.fullmatch(decline_code)
    ):
        raise invalid("decline_code", "must be a short lower-case code")
    ref = body.get("provider_ref")
    provider_ref = ref if isinstance(ref, str) and _PROVIDER_REF.fullmatch(ref) else None
    return event_id, session_id, ProviderResult(attempt, outcome, decline_code, provider_ref)


def parse_since(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    return parse_digits(raw, "since", 0, 10**12)


MAX_NOTE_CHARS = 1000
MAX_REVIEWER_CHARS = 100


# Bidirectional overrides and isolates: they make a text shown in the dashboard or the
# audit trail read as other than it is (a reason or a name shown reversed).
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _text(body: dict[str, Any], field: str, limit: int, lines: bool = True) -> str:
    """A required text of at most ``limit`` characters with no control character (all of
    Unicode's: DEL and C1 too, and the bidirectional ones); new lines and tabs only when
    ``lines`` (a note may have paragraphs, a name may not)."""
    value = body.get(field)
    if not isinstance(value, str) or not value.strip():
        raise invalid(field, "is required and must be a non-empty string")
    value = value.strip()
    if len(value) > limit:
        raise invalid(field, f"may be at most {limit} characters")
    allowed = "\n\t" if lines else ""
    if any(
        (unicodedata.category(ch) == "Cc" and ch not in allowed) or ch in _BIDI_CONTROLS
        for ch in value
    ):
        raise invalid(field, "may not hold control characters")
    return value


def parse_review(body: dict[str, Any]) -> tuple[str, str]:
    """(by, note) of a resolved review."""
    _only(body, {"note", "by"})
    by = _text(body, "by", MAX_REVIEWER_CHARS, lines=False)
    return by, _text(body, "note", MAX_NOTE_CHARS)


def parse_outage(body: dict[str, Any], maximum: int) -> int:
    _only(body, {"seconds"})
    return _int(body, "seconds", 0, maximum)


def parse_session_id(raw: str | None, field: str = "session") -> str:
    if raw is None or not raw.startswith("ps_") or not 4 <= len(raw) <= 64:
        raise invalid(field, "must be a session id (ps_...)")
    return raw


MAX_REASON_CHARS = 200


def parse_refund(body: dict[str, Any]) -> tuple[int | None, str | None]:
    """(amount, reason) of a refund: the amount is optional (all that remains)."""
    _only(body, {"amount", "reason"})
    amount = None if body.get("amount") is None else _int(body, "amount", 1, MAX_AMOUNT)
    reason = None if body.get("reason") is None else _text(body, "reason", MAX_REASON_CHARS)
    return amount, reason


def parse_note(body: dict[str, Any]) -> str:
    """The note of an effect marked done by hand."""
    _only(body, {"note"})
    return _text(body, "note", MAX_NOTE_CHARS)


def _canonical(raw: str) -> bool:
    """A whole number from 1, in ASCII digits without a leading zero."""
    value = ascii_int(raw)
    return value is not None and value >= 1 and str(value) == raw


def parse_effect_id(raw: str) -> tuple[str, int, str, int]:
    """(session, attempt, kind, number) of an effect id, ``ps_...:<attempt>:<kind>[.<n>]``,
    written as paylive writes it: the audit trail records the id as sent, so ``01`` for
    ``1`` or ``refund.0`` for ``refund`` would name the effect acted on otherwise."""
    parts = raw.split(":")
    session_id, attempt, tail = parts if len(parts) == 3 else ("", "", "")
    kind, dot, number = tail.partition(".")
    if (
        not session_id.startswith("ps_")
        or not 4 <= len(session_id) <= 64
        or not _canonical(attempt)
        or kind not in ("void", "refund", "capture")
        or (dot and not _canonical(number))
    ):
        raise Refused(ErrorCode.NOT_FOUND, "no such effect (ids are ps_...:<attempt>:<kind>)")
    return session_id, int(attempt), kind, int(number) if number else 0
