"""Property tests (Hypothesis): whatever a client sends, validation, the socket frame
reader and both codecs answer with a value or a refusal, never another exception.

The suite runs a short pass; ``HYPOTHESIS_PROFILE=long`` runs a long one (README)."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paylive.core.codec import (
    JSON,
    MSGPACK,
    DecodeError,
    Encoded,
    Message,
    decode_frame,
    dumps_strict,
)
from paylive.core.machine import Cancel, Interrupt, ProviderResult, StartAttempt
from paylive.errors import Refused
from paylive.web import validation
from paylive.web.errors import HTTP_STATUS, close_code, http_status
from paylive.web.sockets import parse_command, read_frame

settings.register_profile("suite", max_examples=150, deadline=None)
settings.register_profile(
    "long", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck)
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))

DEPTH = 16
COMMANDS = (StartAttempt, Interrupt, Cancel, ProviderResult)

# Values a client can send: JSON's (NaN, huge and lone surrogates included) and more.
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.sampled_from(["4242424242424242", "ps_x", "pay", "network_error", "succeeded"])
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=20,
)
field_names = st.sampled_from(
    [
        "type",
        "ref",
        "payment_method",
        "reason",
        "order_id",
        "amount",
        "currency",
        "metadata",
        "attempt",
        "outcome",
        "decline_code",
        "provider_ref",
        "id",
        "session",
        "idempotency_key",
        "failure",
    ]
) | st.text(max_size=8)
bodies = st.dictionaries(field_names, values, max_size=8)
card_chars = st.sampled_from("0123456789 \uff10\uff14\u00b2\u0664a-")


def _nested_plain(obj: Any, depth: int = 1) -> bool:
    """What check_tree promises of an accepted value."""
    if isinstance(obj, dict):
        return depth <= DEPTH and all(
            isinstance(k, str) and _nested_plain(v, depth + 1) for k, v in obj.items()
        )
    if isinstance(obj, list):
        return depth <= DEPTH and all(_nested_plain(v, depth + 1) for v in obj)
    if isinstance(obj, float):
        return math.isfinite(obj)
    return obj is None or isinstance(obj, (str, bool, int))


# Validation ------------------------------------------------------------------------


@given(st.binary(max_size=300) | st.text(max_size=300).map(str.encode))
def test_any_body_is_a_map_or_a_refusal(raw: bytes) -> None:
    try:
        body = validation.parse_json(raw, DEPTH)
    except Refused as exc:
        assert exc.code in ("invalid_json", "invalid_field")
        return
    assert isinstance(body, dict) and _nested_plain(body)


@given(bodies)
def test_any_map_is_a_command_or_a_refusal(body: dict[str, Any]) -> None:
    for parse in (
        validation.parse_create,
        validation.parse_attempt,
        validation.parse_interrupt,
        validation.parse_complete,
        validation.parse_webhook,
    ):
        try:
            parse(body)
        except Refused as exc:
            assert exc.code in ("invalid_field", "invalid_currency", "invalid_card")
            assert http_status(exc.code) == 422


@given(st.text(card_chars, max_size=24))
def test_a_card_is_ascii_digits_that_pass_luhn(card: str) -> None:
    try:
        method = validation.parse_payment_method({"card": card}, True)
    except Refused as exc:
        assert exc.code in ("invalid_card", "invalid_field")
        return
    assert method is not None
    number = method["card"]
    assert number.isascii() and number.isdigit() and 12 <= len(number) <= 19
    assert validation.luhn_ok(number)


@given(st.text(max_size=20))
def test_since_is_ascii_digits_or_refused(raw: str) -> None:
    try:
        since = validation.parse_since(raw)
    except Refused as exc:
        assert exc.code == "invalid_field"
        return
    assert since is None or (raw.isascii() and raw.isdigit() and since == int(raw))


# The frame reader and the codecs ------------------------------------------------------


def _message(payload: str | bytes) -> dict[str, Any]:
    if isinstance(payload, str):
        return {"type": "websocket.receive", "text": payload}
    return {"type": "websocket.receive", "bytes": payload}


def _command_or_refusal(frame: dict[str, Any] | Refused) -> None:
    if isinstance(frame, Refused):
        assert frame.code == "invalid_field"
        return
    assert _nested_plain(frame)
    try:
        command = parse_command(frame)
    except Refused as exc:
        assert exc.code in ("invalid_field", "invalid_card", "unknown_command")
        return
    assert command is None or isinstance(command, COMMANDS)


@pytest.mark.parametrize("subprotocol", [JSON, MSGPACK])
@given(payload=st.text(max_size=200) | st.binary(max_size=200))
def test_any_frame_is_a_command_an_answer_or_a_close(
    subprotocol: str, payload: str | bytes
) -> None:
    try:
        frame = read_frame(_message(payload), subprotocol, 4096, DEPTH)
    except Refused as exc:
        assert exc.code in ("invalid_json", "body_too_large")
        assert close_code(exc.code) in (1008, 1009)
        return
    _command_or_refusal(frame)


@pytest.mark.parametrize("subprotocol", [JSON, MSGPACK])
@given(frame=st.dictionaries(field_names, values, max_size=6))
def test_any_encoded_map_reads_back_as_a_command_or_a_refusal(
    subprotocol: str, frame: dict[str, Any]
) -> None:
    if subprotocol == JSON:
        try:
            payload: str | bytes = json.dumps(frame)
        except (ValueError, UnicodeEncodeError):
            return
    else:
        try:
            payload = msgpack.packb(frame, use_bin_type=True)
        except (OverflowError, ValueError):
            return  # integers past 64 bits: msgpack cannot say them
    try:
        read = read_frame(_message(payload), subprotocol, 1 << 20, DEPTH)
    except Refused as exc:
        assert exc.code == "invalid_json"  # nested too deep
        return
    _command_or_refusal(read)


@given(st.text(max_size=64), st.binary(max_size=64))
def test_each_codec_takes_only_its_own_frames(text: str, data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_frame(MSGPACK, text, None, DEPTH)
    try:
        decode_frame(JSON, None, data, DEPTH)
    except (DecodeError, Refused):
        pass


wire_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text().filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=15,
)


@given(
    kind=st.sampled_from(["state", "retry_prompt", "countdown", "ack", "error", "snapshot"]),
    data=st.dictionaries(st.text(max_size=8), wire_values, max_size=4),
    seq=st.none() | st.integers(min_value=0, max_value=2**31),
)
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_both_codecs_carry_the_same_message(
    kind: str, data: dict[str, Any], seq: int | None
) -> None:
    encoded = Encoded.of(Message(kind, data, "ps_x", seq, 1))

    def refuse(name: str) -> None:
        raise AssertionError(f"{name} on the wire")

    from_json = json.loads(encoded.json, parse_constant=refuse)
    from_msgpack = msgpack.unpackb(encoded.msgpack, raw=False)
    assert from_json == from_msgpack == encoded.wire
    assert Encoded.from_json(encoded.json).wire == encoded.wire


@given(
    value=st.recursive(
        st.none()
        | st.booleans()
        | st.integers()  # beyond 64 bits too: the fallback encoder writes them
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.text(),  # lone surrogates too: refused by both, or written by both
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=3)
        ),
        max_leaves=15,
    )
)
def test_the_fast_encoder_writes_what_the_standard_one_writes(value: Any) -> None:
    """``dumps_strict`` (orjson, with the standard encoder behind it) gives the bytes
    the standard encoder gives, or refuses what it refuses."""
    standard = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        expected = standard.encode(value).encode()
    except (ValueError, UnicodeEncodeError):
        with pytest.raises((ValueError, UnicodeEncodeError)):
            dumps_strict(value)
        return
    got = dumps_strict(value)
    # Floats may be spelled otherwise (both give the shortest repr): same values.
    assert json.loads(got) == json.loads(expected)
    if not any(isinstance(leaf, float) for leaf in _leaves(value)):
        assert got == expected


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for child in value.values() for leaf in _leaves(child)]
    if isinstance(value, list):
        return [leaf for child in value for leaf in _leaves(child)]
    return [value]


def test_every_error_code_has_a_status() -> None:
    from paylive.core.protocol import ErrorCode

    assert set(HTTP_STATUS) == set(ErrorCode)
    assert http_status("not a code") == 400
