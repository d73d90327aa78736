"""A busy worker takes every connection waiting for it in a turn of its loop, not one.

A real uvloop loop and real loopback connections. The loop is kept busy as a saturated
worker's is: every turn runs a callback that holds it for a few milliseconds. Each
connection is counted when its protocol is made, and the test counts turns of the loop
rather than seconds, so the machine's speed does not decide it. uvloop alone takes one
connection a turn (the first test shows it, so that the second can fail); with the
server's ``Acceptor`` beside it, all of them arrive within a few turns.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import uvloop

from paylive.server.accepting import PER_TURN, Acceptor, accept_for

CLIENTS = 120
TURN_S = 0.005  # what each turn of the busy loop holds it for


class Counted(asyncio.Protocol):
    def __init__(self, made: list[asyncio.BaseTransport]) -> None:
        self.made = made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)


async def _turns_to_take_all(with_acceptor: bool) -> int:
    """Turns of a busy loop from the moment CLIENTS connections are waiting until the
    last one has its protocol."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.BaseTransport] = []

    def protocol() -> asyncio.Protocol:
        return Counted(made)

    listening = socket.create_server(("127.0.0.1", 0), backlog=CLIENTS * 2)
    listening.setblocking(False)
    server = await loop.create_server(protocol, sock=listening, backlog=CLIENTS * 2)
    acceptors: list[Acceptor] = accept_for(loop, [server], protocol) if with_acceptor else []
    turns = 0
    busy = True

    def turn() -> None:
        nonlocal turns
        turns += 1
        time.sleep(TURN_S)  # a saturated worker's turn: the loop is held
        if busy:
            loop.call_soon(turn)

    port = listening.getsockname()[1]
    clients: list[socket.socket] = []
    try:
        # The connections queue up in the kernel while this holds the loop; then it is
        # busy for a while every turn, as a saturated worker is.
        for _ in range(CLIENTS):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        loop.call_soon(turn)
        start = turns
        deadline = time.monotonic() + 30
        while len(made) < CLIENTS and time.monotonic() < deadline:
            await asyncio.sleep(0)
        assert len(made) == CLIENTS, f"only {len(made)} of {CLIENTS} connections were taken"
        return turns - start
    finally:
        busy = False
        for acceptor in acceptors:
            acceptor.stop()
        for transport in made:
            transport.close()
        for client in clients:
            client.close()
        server.close()
        await server.wait_closed()


def test_uvloop_alone_takes_one_connection_a_turn() -> None:
    """What the acceptor is for: without it, a busy loop needs a turn per connection.
    Should a uvloop release take them all itself, this fails and the acceptor can go."""
    turns = uvloop.run(_turns_to_take_all(with_acceptor=False))
    assert turns >= CLIENTS * 3 // 4, turns


def test_with_the_acceptor_a_busy_loop_takes_them_all_in_a_few_turns() -> None:
    assert CLIENTS <= PER_TURN  # one turn's share takes them all
    turns = uvloop.run(_turns_to_take_all(with_acceptor=True))
    assert turns <= 5, turns


def test_a_stopped_acceptor_takes_nothing_and_leaves_the_socket_open() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        listening = socket.create_server(("127.0.0.1", 0))
        listening.setblocking(False)
        made: list[asyncio.BaseTransport] = []
        acceptor = Acceptor(loop, listening.fileno(), lambda: Counted(made))
        acceptor.stop()
        acceptor.stop()  # twice is harmless: a drain and uvicorn's own shutdown
        client = socket.create_connection(listening.getsockname(), timeout=5)
        try:
            for _ in range(20):
                await asyncio.sleep(0.01)
            assert made == []
            # The shared socket is still the listening one: the connection waits there.
            accepted, _ = listening.accept()
            accepted.close()
        finally:
            client.close()
            listening.close()

    uvloop.run(run())


def test_a_connection_whose_protocol_fails_is_closed_not_leaked() -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        listening = socket.create_server(("127.0.0.1", 0))
        listening.setblocking(False)

        def failing() -> asyncio.Protocol:
            raise RuntimeError("no protocol for this one")

        acceptor = Acceptor(loop, listening.fileno(), failing)
        client = socket.create_connection(listening.getsockname(), timeout=5)
        client.setblocking(False)
        try:
            # The server side is closed: the client reads the end of the stream.
            ended = await asyncio.wait_for(loop.sock_recv(client, 1), timeout=5)
            assert ended == b""
        finally:
            acceptor.stop()
            client.close()
            listening.close()

    uvloop.run(run())


def test_paylive_server_serves_through_its_acceptor_and_stops_it_first() -> None:
    """The wiring: uvicorn's server in paylive's hands gets an acceptor on its socket,
    whose connections reach the app, and a shutdown stops it."""
    import gc

    import uvicorn

    from paylive.server.uvicorn import PayliveServer

    async def app(scope: dict[str, object], receive: object, send: Callable) -> None:
        assert scope["type"] == "http"
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    server = PayliveServer(config)
    thresholds = gc.get_threshold()

    async def run() -> None:
        config.load()
        server.lifespan = config.lifespan_class(config)
        await server.startup()
        try:
            assert len(server.acceptors) == 1
            port = server.servers[0].sockets[0].getsockname()[1]
            # The loop's own server is closed: only the acceptor can take this one.
            server.servers[0].close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            head = await asyncio.wait_for(reader.readline(), timeout=5)
            assert head.startswith(b"HTTP/1.1 204"), head
            writer.close()
            await writer.wait_closed()
        finally:
            await server.shutdown()
        assert all(acceptor.stopped for acceptor in server.acceptors)

    try:
        uvloop.run(run())
    finally:
        # PayliveServer tunes the collector for a worker's life; this process goes on.
        gc.unfreeze()
        gc.set_threshold(*thresholds)
