"""One write to the socket per connection per turn of the event loop.

uvloop's ``transport.write`` sends at once: every call is a ``send`` system call, and
on loopback each one also wakes the reading process. A state change writes several
times to the same connections in one turn of the loop: the HTTP answer's head and
body (two writes in uvicorn), and on every socket of the session and every admin feed
the change's events, one frame each (a ``state`` and a ``retry_prompt`` for an
interrupt). A py-spy profile of a memory worker at its ceiling (2,000 sockets, an
admin feed) had 19 % of its samples in the WebSocket transport's ``write`` and 4 %
in the HTTP one's: about four socket writes per change, some 30 us each on this
machine, nearly all of it the system call.

``Coalescing`` holds what is written during a turn and writes it as one buffer at the
start of the next (``loop.call_soon``), in the order written; a close or an end of
file sends what is held first, an abort drops it, as a real transport's would. The
frames stay frames (docs/protocol.md section 4: one message a frame); only the system
calls that carry them are fewer. A refusal made by the connection protocol goes out at
once (``write_now``): it is the one answer whose worth is its speed. Flow control is the real transport's: it pauses the
protocol when the held bytes reach its buffer, one turn later than before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any


class Coalescing(asyncio.Transport):
    """A transport around ``transport`` whose writes in one turn go out as one."""

    __slots__ = ("_transport", "_loop", "_held")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        # A caller may reuse a bytearray once write returns: hold a copy of it.
        chunk = data if type(data) is bytes else bytes(data)
        if not chunk:
            return
        held = self._held
        if held is None:
            self._held = [chunk]
            self._loop.call_soon(self.flush)
        else:
            held.append(chunk)

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        held, self._held = self._held, None
        if not held or self._transport.is_closing():
            return  # the connection is gone: nobody is there to read it
        self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def write_now(self, data: bytes) -> None:
        """What is held and ``data``, written at once: an answer that must not wait
        for the next turn (a refusal made in ``data_received`` would otherwise wait
        behind every callback the busy turn queued before it)."""
        held, self._held = self._held, None
        if self._transport.is_closing():
            return
        self._transport.write(b"".join([*held, data]) if held else data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = None
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_size(self) -> int:
        held = sum(len(chunk) for chunk in self._held or ())
        return self._transport.get_write_buffer_size() + held

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()
