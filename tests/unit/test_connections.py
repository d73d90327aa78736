"""The connection protocols (``server.connections``, ``server.websocket``) driven in
this process over a transport that records what it is told: what a client's bytes
make a worker hold."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from uvicorn.server import ServerState

from paylive.server import connections, websocket
from paylive.server.connections import BoundedHttpProtocol, PayliveConfig
from paylive.server.websocket import FramingWSProtocol
from paylive.settings import Settings

pytestmark = pytest.mark.anyio

# The requests a connection may hold parsed: those waiting, and what one slice fed to
# the parser past them can hold of the smallest request.
BOUND = connections.MAX_PIPELINED + connections.FEED_BYTES // len(b"GET / HTTP/1.1\r\n\r\n")


class Transport:
    """A client that sends and never reads: its writes are kept, reading is paused and
    resumed as the protocol says."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.paused = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += data

    def writelines(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            self.write(chunk)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )


async def ok(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def protocol() -> tuple[BoundedHttpProtocol, Transport]:
    config = PayliveConfig(app=ok, settings=Settings().connections, log_level="warning")
    config.load()
    made = BoundedHttpProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = Transport()
    made.connection_made(transport)  # type: ignore[arg-type]
    return made, transport


@pytest.mark.parametrize(
    "request_",
    [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
        # A body is cut off where the parser stopped, and its deadline waits for it.
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 700\r\n\r\n" + b"a" * 700,
    ],
    ids=["small", "bodies"],
)
async def test_requests_pipelined_in_one_read_are_parsed_only_as_far_as_a_bound(
    request_: bytes,
) -> None:
    """A read of 250 KB of the smallest requests, from a client that sends them all at
    once and never reads, was parsed whole at once: each request became a request
    cycle and its scope waiting in the pipeline (6,944 of them, 14 MB of a worker's
    memory per connection, measured). What the client sent beyond the bound waits as
    the bytes it is, and is parsed as the requests ahead are answered: every request
    is still answered, in order."""
    made, transport = protocol()
    count = 250_000 // len(request_)
    made.data_received(request_ * count)
    assert len(made.pipeline) <= BOUND
    assert transport.paused
    for _ in range(count * 4):
        if transport.written.count(b"HTTP/1.1 200") == count:
            break
        await asyncio.sleep(0)
        assert len(made.pipeline) <= BOUND
    answers = re.findall(rb"HTTP/1\.1 (\d{3})", bytes(transport.written))
    assert answers == [b"200"] * count
    made.connection_lost(None)


async def test_socket_messages_in_one_read_are_parsed_only_as_far_as_a_bound() -> None:
    """The same for a socket: wsproto's events of a whole read went into the app's
    queue at once, a message dict for each frame of the read (256 KB of the smallest
    masked frames: 32,000 messages, 25 times the bytes). Past ``MAX_QUEUED`` messages
    waiting for the app the rest stays as bytes, parsed as the app takes them."""
    received: list[str] = []
    done = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            received.append(message["text"])
            if len(received) == count:
                done.set()

    config = PayliveConfig(app=app, settings=Settings().connections, log_level="warning")
    config.load()
    made = FramingWSProtocol(config, ServerState(), {}, asyncio.get_running_loop())
    transport = Transport()
    made.connection_made(transport)  # type: ignore[arg-type]
    made.data_received(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    for _ in range(100):
        if b"101 Switching" in transport.written:
            break
        await asyncio.sleep(0)
    frame = bytes((0x81, 0x80 | 2)) + b"\0\0\0\0" + b"{}"  # masked (by zeros) "{}"
    count = 256_000 // len(frame)
    made.data_received(frame * count)
    assert made.queue.qsize() <= websocket.MAX_QUEUED
    async with asyncio.timeout(10):
        while not done.is_set():
            assert made.queue.qsize() <= websocket.MAX_QUEUED
            await asyncio.sleep(0)
    assert received == ["{}"] * count
    made.connection_lost(None)
