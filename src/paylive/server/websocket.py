"""uvicorn's wsproto WebSocket protocol, with the frames of messages made here.

A server's data frame is a two-to-ten-byte head and the payload, unmasked (RFC 6455
section 5.2); with no extension negotiated (paylive turns per-message deflate off)
that is all wsproto makes of a message, through a generic path of events, a frame
serializer, a bytearray copy and an empty extension loop: 4 % of a memory worker's
py-spy samples at its ceiling, where this takes a fraction of that. Everything else
(the handshake, pings, closes, the connection's state) is still wsproto's, and a
message sent in any state but OPEN goes through it as before.

A client's frames are parsed as the app takes them: at most ``MAX_QUEUED`` messages
wait for it, and what the client sent past them stays in wsproto's buffer as the bytes
it is. uvicorn parsed every frame of a read at once into a message of the app's queue:
one read of 256 KB of the smallest frames was 32,000 messages, 25 times the bytes.

A socket whose client reads nothing is reset once the worker's writes to it have waited
``write_timeout_ms`` (``connections.WriteDeadline``): wsproto's own ends (a close
after an unanswered ping, a slow consumer's 1013) close the transport, and a close
waits to send what is buffered, which such a client never takes.
"""

from __future__ import annotations

import struct
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.wsproto_impl import WSProtocol
from wsproto import events
from wsproto.connection import ConnectionState

from .connections import WritesTimed, write_deadline

# Messages parsed and waiting for the app, at most (see the module docstring).
MAX_QUEUED = 16

TEXT = 0x81  # FIN and the text opcode
BINARY = 0x82  # FIN and the binary opcode


def data_frame(data: str | bytes) -> bytes:
    """One whole message as one unmasked frame."""
    if isinstance(data, str):
        payload, head = data.encode("utf-8"), TEXT
    else:
        payload, head = bytes(data), BINARY
    size = len(payload)
    if size < 126:
        return bytes((head, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", head, 126, size) + payload
    return struct.pack("!BBQ", head, 127, size) + payload


class FramingWSProtocol(WritesTimed, WSProtocol):
    # Frames left unparsed in wsproto's buffer while the queue was full.
    _backlog = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writes = write_deadline(self.config)

    def handle_events(self) -> None:
        """uvicorn's, stopped while ``MAX_QUEUED`` messages wait for the app: the
        events not asked of wsproto yet stay in its buffer, unparsed, in order."""
        for event in self.conn.events():
            if self.close_sent:
                if isinstance(event, events.CloseConnection):
                    self.handle_close(event)
                continue
            if isinstance(event, events.Request):
                self.handle_connect(event)
            elif isinstance(event, events.TextMessage | events.BytesMessage):
                self.handle_message(event)
            elif isinstance(event, events.CloseConnection):
                self.handle_close(event)
            elif isinstance(event, events.Ping):
                self.handle_ping(event)
            elif isinstance(event, events.Pong):
                self.handle_pong(event)
            if self.queue.qsize() >= MAX_QUEUED:
                self._backlog = True
                return
        self._backlog = False

    async def receive(self) -> Any:
        message = await super().receive()
        if self._backlog and self.queue.empty() and not self.disconnected:
            self.handle_events()
        return message

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.send" and not self.config.ws_per_message_deflate:
            await self.writable.wait()
            if (
                self.handshake_complete
                and not self.close_sent
                and not self.response_started
                and not self.disconnected
            ):
                if self.conn.state is not ConnectionState.OPEN:
                    raise ClientDisconnected()  # as wsproto's refusal is turned into
                data = message.get("text") if message.get("bytes") is None else message["bytes"]
                frame = data_frame(data)
                if not self.transport.is_closing():
                    self.transport.write(frame)
                return
        await super().send(message)

    def handle_close(self, event: events.CloseConnection) -> None:
        if not self.close_sent and self.conn.state is ConnectionState.OPEN:
            # wsproto reports a frame that breaks RFC 6455 (an unmasked frame, a
            # reserved opcode, text that is not UTF-8) as a close with the code it
            # deserves, 1002 or 1007, while the peer sent none; uvicorn then dropped
            # the connection without a close frame, and the client saw 1006.
            reason = _close_reason(event.reason or "")
            self.transport.write(self.conn.send(events.CloseConnection(event.code, reason)))
            super().handle_close(event)  # the app hears the close; the connection ends
            self.close_sent = True
            return
        super().handle_close(event)


# A close reason is at most 123 bytes of UTF-8 (RFC 6455 section 5.5).
MAX_REASON_BYTES = 123


def _close_reason(text: str) -> str:
    return text.encode()[:MAX_REASON_BYTES].decode(errors="ignore")


def ws_protocol(name: str) -> str | type[WSProtocol]:
    """uvicorn's ``ws`` for the setting ``name``: wsproto's is the one above."""
    return FramingWSProtocol if name == "wsproto" else name
