"""Expiry, attempts outliving expiry and the slow-consumer policy, on a real server
configured with a short session TTL and a tiny send queue."""

from __future__ import annotations

import socket

import anyio
import httpx
import pytest
from websockets.asyncio.client import connect

from ..support.client import Socket, create, merchant, open_socket, session_url
from ..support.servers import ADMIN_TOKEN, Server

pytestmark = pytest.mark.anyio

SERVER_ENV = {
    "PAYLIVE_SESSION_TTL_MS": "1500",
    "PAYLIVE_ATTEMPT_TIMEOUT_MS": "1200",
    # The slow consumer's queue (sixty-four on an admin feed); the other tests' sockets
    # are read all along and get a few messages at a time.
    "PAYLIVE_SEND_QUEUE_SIZE": "4",
}


async def test_an_untouched_session_expires(server: Server, http: httpx.AsyncClient) -> None:
    session = await create(http)
    sock = await open_socket(session_url(server.ws_url, session))
    await sock.recv()
    expired = await sock.state("expired", timeout=4)
    assert expired["data"]["cause"] == "expired" and expired["data"]["previous"] == "created"
    late = await http.post(
        f"/api/sessions/{session['id']}/attempts",
        json={"payment_method": {"card": "4242424242424242"}},
        headers=merchant(),
    )
    assert late.status_code == 409 and late.json()["error"]["code"] == "invalid_state"
    await sock.conn.close()


async def test_expiry_waits_for_the_attempt_in_flight(
    server: Server, http: httpx.AsyncClient
) -> None:
    session = await create(http)
    sock = await open_socket(session_url(server.ws_url, session))
    await sock.recv()
    await anyio.sleep(0.5)
    # Never answers: its 1.2 s deadline is past the session's 1.5 s expiry.
    await sock.send({"type": "pay", "payment_method": {"card": "4000000000000408"}})
    started = await sock.state("processing")
    assert started["data"]["session"]["deadline"] > started["data"]["session"]["expires_at"]
    ended = await sock.until(
        lambda m: m["type"] == "state" and m["seq"] > started["seq"], timeout=4
    )
    assert ended["data"]["session"]["status"] == "expired"
    assert ended["ts"] >= started["data"]["session"]["deadline"], "not before the attempt ended"
    assert ended["data"]["session"]["attempts"][0]["status"] == "voided"
    await sock.conn.close()


async def test_a_consumer_that_cannot_keep_up_is_closed_1013(
    server: Server, http: httpx.AsyncClient
) -> None:
    await _slow_consumer(server, http)


async def _slow_consumer(server: Server, http: httpx.AsyncClient) -> None:
    # A reader that never reads, with the smallest receive buffer the kernel allows,
    # so the server's writes back up into its queue. Small segments too: the server's
    # send buffer grows with the segment size (to about 2 MB on loopback's 64 KB ones),
    # and must fill before its writes wait.
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    raw.connect(("127.0.0.1", server.port))
    slow = await connect(
        f"{server.ws_url}/ws/admin?token={ADMIN_TOKEN}", sock=raw, max_queue=1, max_size=2**20
    )
    brisk = await open_socket(f"{server.ws_url}/ws/admin?token={ADMIN_TOKEN}")
    await brisk.recv()
    padding = {f"k{i}": "x" * 180 for i in range(20)}
    created: list[str] = []
    async with anyio.create_task_group() as tg:
        # The brisk feed reads all along, as a healthy dashboard does.
        tg.start_soon(_drain, brisk)
        with anyio.move_on_after(20):
            while len(created) < 3000:
                created.append((await create(http, metadata=padding))["id"])
                if len(created) % 10 == 0 and await _slow_consumers(http) > 0:
                    break
        # The brisk feed catches up with the last sessions (asserted below), bounded.
        with anyio.move_on_after(5):
            while not set(created) <= _created_seen(brisk):
                await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    # The slow reader now drains what it has and sees the close.
    with anyio.fail_after(10):
        try:
            while True:
                await slow.recv()
        except Exception:
            pass
    assert slow.close_code == 1013, f"closed with {slow.close_code} after {len(created)} sessions"
    # The brisk feed was not held back: it is open and saw every session created.
    assert brisk.conn.close_code is None
    assert set(created) <= _created_seen(brisk)
    await brisk.conn.close()


def _created_seen(feed: Socket) -> set[str]:
    return {m["session"] for m in feed.received if m["type"] == "admin.created"}


async def _slow_consumers(http: httpx.AsyncClient) -> float:
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith("paylive_slow_consumers_total "):
            return float(line.split()[1])
    raise AssertionError("paylive_slow_consumers_total is missing from /metrics")


async def _drain(sock: Socket) -> None:
    while True:
        await sock.recv(timeout=30)


async def test_sockets_keep_their_own_channel(server: Server, http: httpx.AsyncClient) -> None:
    one, two = await create(http), await create(http)
    a: Socket = await open_socket(session_url(server.ws_url, one))
    b: Socket = await open_socket(session_url(server.ws_url, two))
    await a.recv(), await b.recv()
    await a.send({"type": "cancel"})
    await a.state("cancelled")
    await b.send({"type": "ping"})
    pong = await b.until(lambda m: m["type"] == "pong")
    assert pong["session"] == two["id"]
    assert all(m["session"] == two["id"] for m in b.received), "no foreign events"
    await a.conn.close(), await b.conn.close()
