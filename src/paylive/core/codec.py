"""Server messages (docs/protocol.md section 4) and their two wire encodings.

A message is encoded at most once per codec per worker: ``Encoded`` caches the
bytes, and the same object is handed to every local subscriber.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .protocol import DURABLE_TYPES, MSGPACK
from .protocol import JSON as JSON
from .protocol import SUBPROTOCOLS as _BY_CODEC

SUBPROTOCOLS = tuple(_BY_CODEC.values())


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


def dumps_json(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass
class Encoded:
    """One message with its encodings made on first use and then shared."""

    wire: dict[str, Any]
    _json: bytes | None = None
    _msgpack: bytes | None = None
    _text: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, message: Message) -> Encoded:
        return cls(message.to_wire())

    @classmethod
    def from_json(cls, raw: bytes) -> Encoded:
        """Wrap bytes that came through the engine; they are decoded once, here."""
        return cls(json.loads(raw), _json=raw)

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
            self._json = dumps_json(self.wire)
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

    def frame(self, subprotocol: str) -> str | bytes:
        """What to send on a socket speaking ``subprotocol``: text for JSON, binary for msgpack."""
        return self.msgpack if subprotocol == MSGPACK else self.text


class DecodeError(ValueError):
    """A client frame that is not a map in the socket's encoding."""


def decode_frame(subprotocol: str, text: str | None, data: bytes | None) -> dict[str, Any]:
    """Decode one client frame; JSON sockets take text, msgpack sockets take binary."""
    try:
        if subprotocol == MSGPACK:
            if data is None:
                raise DecodeError("this socket speaks paylive.v1.msgpack: send binary frames")
            obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
        else:
            if text is None:
                if data is None:
                    raise DecodeError("empty frame")
                text = data.decode("utf-8")
            obj = json.loads(text)
    except DecodeError:
        raise
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise DecodeError(f"malformed message: {exc}") from None
    if not isinstance(obj, dict):
        raise DecodeError("a message must be a map")
    return obj
