"""Client addresses behind a trusted proxy, against a real ``paylive serve``: every part
of the server that counts by address counts the client the proxy forwarded, and no
client picks its own address by sending ``X-Forwarded-For`` itself.

The connection protocol holds a command's place from the moment it has the command
whole, before the app (and so before uvicorn's proxy-headers middleware) has run: it
counted that place in the share of the proxy's address, while the door counted the
places in flight by the forwarded one. One client behind the proxy, with its share in
flight, then held more places than its share in the window between the two, and the
worker's last places went to it: another client behind the same proxy was refused 503
``overloaded`` at once (found in a review on 2026-12-07)."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from ..support import tls
from ..support.redisproc import RedisProc
from ..support.servers import ADMIN_TOKEN, API_KEY, Server
from ..support.waiting import healthz_on, read_to_close, until

pytestmark = pytest.mark.anyio

MERCHANT = {"Authorization": f"Bearer {API_KEY}"}
SHARE = 2
# Four places, two of them one address's share; loopback (this test's clients) is the
# trusted proxy, and 127.0.0.2 (a client of its own) is not. Commands wait for a
# frozen Redis as long as a test needs.
ENV = {
    "PAYLIVE_MAX_IN_FLIGHT": "4",
    "PAYLIVE_ADAPTIVE_IN_FLIGHT": "0",
    "PAYLIVE_MAX_IN_FLIGHT_PER_ADDRESS": str(SHARE),
    "PAYLIVE_TRUSTED_PROXIES": "127.0.0.1",
    "PAYLIVE_REDIS_TIMEOUT_MS": "20000",
    "PAYLIVE_ATTEMPT_TIMEOUT_MS": "600000",
    "PAYLIVE_LOG_FORMAT": "json",
}
PROXY = "127.0.0.1"
STRANGER = "127.0.0.2"


@pytest.fixture
def forwarding(fresh_redis: RedisProc) -> Iterator[Server]:
    with Server({**ENV, "PAYLIVE_REDIS_URL": fresh_redis.url}) as running:
        yield running


def create(http: httpx.Client) -> dict[str, Any]:
    payload = {"order_id": "order-1", "amount": 1999, "currency": "EUR"}
    reply = http.post("/api/sessions", json=payload, headers=MERCHANT)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def check(session: dict[str, Any], forwarded_for: str) -> bytes:
    """A ``check`` of ``session`` as a proxy sends it for ``forwarded_for``."""
    return (
        b"POST /api/sessions/%s/check HTTP/1.1\r\nHost: x\r\n" % str(session["id"]).encode()
        + b"Authorization: Bearer " + str(session["client_secret"]).encode() + b"\r\n"
        + b"X-Forwarded-For: " + forwarded_for.encode() + b"\r\n"
        + b"Connection: close\r\nContent-Length: 0\r\n\r\n"
    )  # fmt: skip


def connection(server: Server, source: str) -> socket.socket:
    """A connection from ``source`` the worker has accepted and served once."""
    sock = socket.create_connection(("127.0.0.1", server.port), 10, (source, 0))
    healthz_on(sock)
    return sock


def status(sock: socket.socket) -> int:
    answer = read_to_close(sock, time.monotonic() + 10)
    found = re.match(rb"HTTP/1\.1 (\d{3}) ", answer)
    assert found, answer
    return int(found.group(1))


def answered(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def log_lines(server: Server) -> list[dict[str, Any]]:
    return [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]


def access_clients(server: Server, path: str) -> list[str]:
    """The ``client`` of each access log line of a request to a path with ``path`` in it."""
    return [
        str(line["client"])
        for line in log_lines(server)
        if line.get("event") == "http.request" and path in str(line.get("path", ""))
    ]


def in_flight(http: httpx.Client, count: int) -> bool:
    # /metrics reads no Redis: it answers while Redis is frozen.
    return f"\npaylive_in_flight {count}.0\n" in http.get("/metrics").text


async def test_a_forwarded_client_with_its_share_in_flight_does_not_refuse_another(
    forwarding: Server, fresh_redis: RedisProc
) -> None:
    """Client A (203.0.113.1) has its whole share in flight and sends two commands more;
    client B (203.0.113.2) sends one in the same turn of the worker's loop (the worker is
    stopped while the three are sent, so it reads them together). A's two are refused
    429 for its share and hold nothing; B's gets in. The places of A's two were counted
    in the proxy's share, not A's, and filled the worker: B was refused 503."""
    with httpx.Client(base_url=forwarding.url, timeout=10, verify=tls.CONTEXT) as http:
        mine, other = create(http), create(http)
        socks = [connection(forwarding, PROXY) for _ in range(5)]
        fresh_redis.pause()
        try:
            for sock in socks[:SHARE]:
                sock.sendall(check(mine, "203.0.113.1"))
            await until(lambda: in_flight(http, SHARE))
            assert forwarding.proc is not None
            os.kill(forwarding.proc.pid, signal.SIGSTOP)
            try:
                socks[2].sendall(check(mine, "203.0.113.1"))
                socks[3].sendall(check(mine, "203.0.113.1"))
                socks[4].sendall(check(other, "203.0.113.2"))
            finally:
                os.kill(forwarding.proc.pid, signal.SIGCONT)
            assert [status(socks[2]), status(socks[3])] == [429, 429]
            # B's gets in and waits for Redis (refused, it would be answered now).
            await until(lambda: in_flight(http, SHARE + 1) or answered(socks[4]))
            assert not answered(socks[4]), read_to_close(socks[4], time.monotonic() + 5)
        finally:
            fresh_redis.resume()
        assert [status(sock) for sock in (*socks[:SHARE], socks[4])] == [200, 200, 200]
        for sock in socks:
            sock.close()
    # The access log names the client the proxy forwarded, as the door counted it.
    clients = access_clients(forwarding, "/check")
    assert sorted(clients) == ["203.0.113.1:0"] * 4 + ["203.0.113.2:0"], clients


def test_a_socket_behind_the_proxy_is_its_client(forwarding: Server) -> None:
    """Socket handshakes do not pass the connection protocol's reading of the headers
    (the socket's own protocol makes their scope): the app's entry decides them by the
    same rule."""
    url = f"{forwarding.ws_url}/ws/admin?token={ADMIN_TOKEN}"
    for forwarded in ("203.0.113.9", "198.51.100.3, 203.0.113.10, 127.0.0.1"):
        with connect(url, additional_headers={"X-Forwarded-For": forwarded}) as ws:
            assert json.loads(ws.recv(timeout=5))["type"] == "admin.snapshot"
    accepted = [
        line["event"] for line in log_lines(forwarding) if "[accepted]" in str(line.get("event"))
    ]
    assert [event.split(" - ")[0] for event in accepted] == [
        "203.0.113.9:0",
        "203.0.113.10:0",
    ], accepted


async def test_x_forwarded_for_from_an_untrusted_peer_is_ignored(
    forwarding: Server, fresh_redis: RedisProc
) -> None:
    """A peer that is no trusted proxy cannot pick its share by what it claims: its
    commands count as its own address's, whatever X-Forwarded-For says."""
    with httpx.Client(base_url=forwarding.url, timeout=10, verify=tls.CONTEXT) as http:
        session = create(http)
        socks = [connection(forwarding, STRANGER) for _ in range(SHARE + 1)]
        fresh_redis.pause()
        try:
            for n, sock in enumerate(socks[:SHARE]):
                sock.sendall(check(session, f"203.0.113.{n}"))
            await until(lambda: in_flight(http, SHARE))
            socks[SHARE].sendall(check(session, "198.51.100.7"))
            assert status(socks[SHARE]) == 429
        finally:
            fresh_redis.resume()
        assert [status(sock) for sock in socks[:SHARE]] == [200] * SHARE
        for sock in socks:
            sock.close()
    # Logged as the peer it is, not as the client it named.
    hosts = {client.rpartition(":")[0] for client in access_clients(forwarding, "/check")}
    assert hosts == {STRANGER}, hosts
