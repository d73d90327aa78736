"""Server messages (docs/protocol.md section 4) and their two wire encodings.

A message is encoded at most once per codec per worker: ``Encoded`` caches the
bytes, and the same object is handed to every local subscriber. One that carries a
gateway effect also has a customer's view (``Encoded.customer``), itself encoded at
most once per codec and shared by every customer subscriber.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import msgpack
import orjson

from ..errors import PayliveError, Refused
from .effects import customer_effect
from .protocol import DURABLE_TYPES, MSGPACK, ErrorCode
from .protocol import JSON as JSON
from .protocol import SUBPROTOCOLS as _BY_CODEC

SUBPROTOCOLS = tuple(_BY_CODEC.values())

# Server-Sent Events (docs/protocol.md 4.2), as a subscriber's "subprotocol": one
# session's stream gives each durable event (and a snapshot) its seq as the event id,
# so that EventSource's Last-Event-ID resumes like ``since``; the admin feed interleaves
# every session's seqs, so its events carry no id.
SSE = "sse"
SSE_NO_IDS = "sse.no-ids"


@dataclass(frozen=True)
class Message:
    type: str
    data: dict[str, Any]
    session: str | None = None
    seq: int | None = None
    ts: int = 0

    @property
    def durable(self) -> bool:
        return self.type in DURABLE_TYPES

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "session": self.session,
            "seq": self.seq,
            "ts": self.ts,
            "data": self.data,
        }


# How many events ``Encoded.handed`` remembers for ``Encoded.from_json``. An event is
# taken back within the save that hands it (memory) or a round trip to Redis.
HANDED_KEPT = 1024


@dataclass
class Encoded:
    """One message with its encodings made on first use and then shared."""

    wire: dict[str, Any]
    _json: bytes | None = None
    _msgpack: bytes | None = None
    _text: str | None = field(default=None, repr=False)
    _sse: bytes | None = field(default=None, repr=False)
    _sse_no_ids: bytes | None = field(default=None, repr=False)
    # The customer's view (``customer``): None with ``_viewed`` set means this very
    # message (holding no effect), never a reference to itself, which would make every
    # event a cycle for the garbage collector instead of freed when delivered.
    _customer: Encoded | None = field(default=None, repr=False)
    _viewed: bool = field(default=False, repr=False)

    @classmethod
    def of(cls, message: Message) -> Encoded:
        return cls(message.to_wire())

    @classmethod
    def from_json(cls, raw: bytes) -> Encoded:
        """Wrap bytes that came through the engine; they are decoded once, here, unless
        this worker made them (``handed``): then it is the message it made."""
        made = _HANDED.pop(raw, None)
        if made is not None:
            return made
        return cls(json.loads(raw), _json=raw)

    def handed(self) -> bytes:
        """The JSON for the engine to store and publish, remembered for a while: the
        worker that saved an event gets it back from the engine (at once from the
        memory engine, through pub/sub from Redis), and ``from_json`` then finds the
        message here instead of decoding it again (4 % of a memory worker's samples
        at its ceiling). A message's map is JSON's own (string keys, lists, strings,
        numbers, booleans, null), so what is found is what decoding would give."""
        raw = self.json
        _HANDED[raw] = self
        if len(_HANDED) > HANDED_KEPT:
            del _HANDED[next(iter(_HANDED))]  # the oldest: its event went unheard here
        return raw

    @property
    def type(self) -> str:
        return str(self.wire["type"])

    @property
    def session(self) -> str | None:
        return self.wire.get("session")

    @property
    def durable(self) -> bool:
        return self.type in DURABLE_TYPES

    @property
    def seq(self) -> int | None:
        return self.wire.get("seq")

    @property
    def ts(self) -> int:
        return int(self.wire.get("ts") or 0)

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = dumps_strict(self.wire)
        return self._json

    @property
    def text(self) -> str:
        if self._text is None:
            self._text = self.json.decode()
        return self._text

    @property
    def msgpack(self) -> bytes:
        if self._msgpack is None:
            self._msgpack = msgpack.packb(self.wire, use_bin_type=True)
        return self._msgpack

    @property
    def sse(self) -> bytes:
        """One SSE event: ``id: <seq>`` for a durable event or a snapshot (it stands for
        every event up to its seq), then the JSON map (compact JSON has no newline)."""
        if self._sse is None:
            seq = self.seq
            keyed = seq is not None and (self.durable or self.type == "snapshot")
            head = f"id: {seq}\n" if keyed else ""
            self._sse = f"{head}data: {self.text}\n\n".encode()
        return self._sse

    @property
    def sse_no_ids(self) -> bytes:
        if self._sse_no_ids is None:
            self._sse_no_ids = f"data: {self.text}\n\n".encode()
        return self._sse_no_ids

    @property
    def customer(self) -> Encoded:
        """What a customer's channel is sent (docs/protocol.md 4.1): this message
        itself, sharing its encodings, unless its ``data`` holds an ``effect``; then a
        copy with the customer's view of it (``customer_effect``), made on first use
        and shared by every customer subscriber, so that an effect event is encoded at
        most twice per codec (staff's and customers'), and any other event once."""
        if not self._viewed:
            self._viewed = True
            data = self.wire.get("data")
            effect = data.get("effect") if isinstance(data, dict) else None
            if isinstance(data, dict) and isinstance(effect, dict):
                slim = {**data, "effect": customer_effect(effect)}
                # Viewed already: the view is what it shows a customer.
                self._customer = Encoded({**self.wire, "data": slim}, _viewed=True)
        return self._customer or self

    def frame(self, subprotocol: str) -> str | bytes:
        """What to send on a socket speaking ``subprotocol``: text for JSON, binary for
        msgpack; on an event stream, the bytes of one event."""
        if subprotocol == MSGPACK:
            return self.msgpack
        if subprotocol == SSE:
            return self.sse
        if subprotocol == SSE_NO_IDS:
            return self.sse_no_ids
        return self.text


_HANDED: dict[bytes, Encoded] = {}


class DecodeError(PayliveError, ValueError):
    """A client frame that is not a map in the socket's encoding."""


# The fallback encoder, for what orjson refuses: ``json.dumps`` with options makes a
# new one a call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ORJSON = orjson.OPT_NON_STR_KEYS


def dumps_strict(obj: Any) -> bytes:
    """JSON out: compact UTF-8, and never the ``NaN`` or ``Infinity`` that JSON does not
    have. orjson makes it (0.8 against 5.0 us for a session's state event, the same
    bytes: compact separators, keys in order, no ASCII escapes); what it refuses (an
    integer beyond 64 bits in a shop's metadata, a lone surrogate) goes to the standard
    encoder, which writes the big integer and refuses the rest. orjson would write
    ``null`` for a float that is not finite, where the standard encoder raises: nothing
    encoded here holds one, as ``check_tree`` refuses them in everything a client
    sends and the server computes none."""
    try:
        return orjson.dumps(obj, option=_ORJSON)
    except TypeError:
        return _ENCODER.encode(obj).encode()


def loads_json(raw: str | bytes, max_depth: int) -> Any:
    """JSON in, strictly: DecodeError for what is not JSON or nests deeper than
    ``max_depth``; ``Refused(invalid_field)`` naming the field for a number that is not
    finite (``NaN``, ``Infinity``, ``1e999``), which Python's parser would accept."""
    try:
        if not isinstance(raw, str):
            # JSON travels as UTF-8 (RFC 8259 section 8.1), without a byte order mark:
            # json.loads would guess UTF-16 or UTF-32 from bytes and skip a BOM, where
            # a socket's frame, decoded here as UTF-8, refuses both.
            raw = raw.decode("utf-8")
        # A Python call per integer doubles the parse of a command's body: only a text
        # with a run of digits that long needs it.
        long_digits = _LONG_DIGITS.search(raw) is not None
        obj = json.loads(raw, parse_int=_integer) if long_digits else json.loads(raw)
    except RecursionError:
        raise DecodeError(f"nested more than {max_depth} deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DecodeError(f"not valid JSON: {exc}") from None
    check_tree(obj, max_depth)
    return obj


# Past this many digits an integer is beyond a double (1.8e308 has 309), and int()
# refuses past 4,300 with a ValueError read as malformed JSON.
_MAX_INT_DIGITS = 400
_LONG_DIGITS = re.compile(f"[0-9]{{{_MAX_INT_DIGITS + 1}}}")


def _integer(text: str) -> int | float:
    """A JSON integer; one beyond a double is infinite, so ``check_tree`` refuses it as
    it refuses ``1e999``, naming its field."""
    return int(text) if len(text) <= _MAX_INT_DIGITS else float(text)


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_tree(obj: Any, max_depth: int) -> None:
    """A decoded message must be what JSON can say and every peer can read back: maps
    with string keys, lists, strings of valid Unicode (no lone surrogates), booleans,
    null, integers and finite numbers, at most ``max_depth`` deep (msgpack can also
    carry bytes, extension types and other keys). DecodeError for the shape,
    ``Refused(invalid_field)`` naming the field for a bad number or string."""
    stack: list[tuple[Any, str, int]] = [(obj, "value", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict):
            if depth > max_depth:
                raise DecodeError(f"nested more than {max_depth} deep")
            for key, child in value.items():
                if not isinstance(key, str) or _SURROGATE.search(key):
                    raise DecodeError(f"{path}: map keys must be strings of valid Unicode")
                stack.append((child, key if path == "value" else f"{path}.{key}", depth + 1))
        elif isinstance(value, list):
            if depth > max_depth:
                raise DecodeError(f"nested more than {max_depth} deep")
            for index, child in enumerate(value):
                stack.append((child, f"{path}[{index}]", depth + 1))
        elif isinstance(value, str):
            if _SURROGATE.search(value):
                raise Refused(ErrorCode.INVALID_FIELD, f"{path}: must be valid Unicode")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise Refused(ErrorCode.INVALID_FIELD, f"{path}: must be a finite number")
        elif value is not None and not isinstance(value, (bool, int)):
            raise DecodeError(f"{path}: {type(value).__name__} is not a JSON value")


def decode_frame(
    subprotocol: str, text: str | None, data: bytes | None, max_depth: int
) -> dict[str, Any]:
    """Decode one client frame; JSON sockets take text, msgpack sockets take binary.
    DecodeError for a frame that is not a map; Refused for a number that is not finite."""
    if subprotocol == MSGPACK:
        if data is None:
            raise DecodeError("this socket speaks paylive.v1.msgpack: send binary frames")
        try:
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            raise DecodeError(f"malformed message: {exc}") from None
        check_tree(obj, max_depth)
    else:
        if text is None:
            if data is None:
                raise DecodeError("empty frame")
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("a JSON frame must be UTF-8") from None
        obj = loads_json(text, max_depth)
    if not isinstance(obj, dict):
        raise DecodeError("a message must be a map")
    return obj
