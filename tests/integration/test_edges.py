"""Odd input at the edges, against a real ``paylive serve``: each was once answered
otherwise than docs/protocol.md says (found in a review on 2026-12-07). A socket
handshake with bytes past ASCII in a header; request headers without end; a refusal
that spent the single-use ticket it came with; opens made at the same time that all
passed the per-session cap; a trailing newline taken by a pattern anchored with ``$``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from ..support import tls
from ..support.redisproc import RedisProc
from ..support.servers import ADMIN_TOKEN, API_KEY, Server
from ..support.waiting import closed_by_server, exchange, healthz_on

MERCHANT = {"Authorization": f"Bearer {API_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


# One socket or stream per session: the place a ticket test fills. Headers within 1 s,
# and a keep-alive far longer, so that only the header timer can close a connection
# whose later request never ends its headers.
# Three commands in flight at most, fixed: the place a leak would take is counted;
# one of them per session.
SERVER_ENV = {
    "PAYLIVE_MAX_SOCKETS_PER_SESSION": "1",
    "PAYLIVE_HEADER_TIMEOUT_MS": "1000",
    "PAYLIVE_KEEPALIVE_MS": "30000",
    "PAYLIVE_MAX_IN_FLIGHT": "3",
    "PAYLIVE_ADAPTIVE_IN_FLIGHT": "0",
    "PAYLIVE_MAX_IN_FLIGHT_PER_SESSION": "1",
}


@pytest.fixture(scope="module")
def on_redis(redis: RedisProc) -> Iterator[Server]:
    """The same server on the Redis engine, where spending a ticket is a round trip."""
    with Server({**SERVER_ENV, "PAYLIVE_REDIS_URL": redis.url}) as running:
        yield running


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10, verify=tls.CONTEXT) as plain:
        yield plain


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    payload = {"order_id": "order-1", "amount": 1999, "currency": "EUR", **body}
    reply = client.post("/api/sessions", json=payload, headers=MERCHANT)
    assert reply.status_code == 201, reply.text
    return dict(reply.json())


def ticket_for(client: httpx.Client, session: dict[str, Any]) -> str:
    reply = client.post(
        "/api/tickets", headers={"Authorization": f"Bearer {session['client_secret']}"}
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["ticket"])


def socket_close(url: str) -> tuple[int | None, list[str]]:
    """Open a socket, read until the server closes it (2 s at most): its close code
    and the messages it sent."""
    received: list[str] = []
    with connect(url, open_timeout=5, subprotocols=["paylive.v1.json"]) as conn:  # type: ignore[list-item]
        try:
            while True:
                received.append(str(conn.recv(timeout=2)))
        except (ConnectionClosed, TimeoutError):
            pass
        code = conn.close_code
    return code, received


def opens_live(url: str) -> None:
    """The socket at ``url`` is let in: a snapshot, and it stays open (its ticket was
    still good)."""
    code, received = socket_close(url)
    assert code is None, code
    assert received and '"snapshot"' in received[0], received


# A socket handshake with a header past ASCII: once an unhandled exception, no answer


@pytest.mark.parametrize(
    "header",
    [
        b"Sec-WebSocket-Protocol: paylive.v1.json, \xc3\xa9",
        b"Sec-WebSocket-Extensions: \xff",
        b"Host: \xff",
    ],
    ids=["subprotocol", "extensions", "host"],
)
def test_a_handshake_with_a_non_ascii_header_is_answered_not_a_crash(
    server: Server, header: bytes
) -> None:
    offset = len(server.log())
    lines = [
        b"GET /ws/admin?token=" + ADMIN_TOKEN.encode() + b" HTTP/1.1",
        b"Upgrade: websocket",
        b"Connection: Upgrade",
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        b"Sec-WebSocket-Version: 13",
    ]
    if not header.startswith(b"Host:"):
        lines.insert(1, b"Host: 127.0.0.1")
    lines.append(header)
    answer = exchange(server.port, b"\r\n".join(lines) + b"\r\n\r\n")
    time.sleep(0.3)
    logged = server.log()[offset:]
    assert "Traceback" not in logged, f"unhandled exception in the server log:\n{logged}"
    # A malformed handshake still gets an answer, not a dropped connection.
    assert answer.startswith(b"HTTP/1.1 400"), f"the client got {answer[:200]!r}"


# A refusal before the socket, stream or poll opens leaves its ticket unspent


def test_a_socket_refused_for_a_bad_since_does_not_spend_its_ticket(
    server: Server, client: httpx.Client
) -> None:
    session = create(client)
    ticket = ticket_for(client, session)
    base = f"{server.ws_url}/ws/sessions/{session['id']}?ticket={ticket}"
    code, _ = socket_close(base + "&since=abc")
    assert code == 1008  # the bad `since` is refused, as section 3.1 says
    # Bad input changes nothing: the same ticket still opens the socket (it was
    # spent before `since` was read, and the second open closed 4401).
    opens_live(base)


def test_a_stream_refused_429_too_many_sockets_does_not_spend_its_ticket(
    server: Server, client: httpx.Client
) -> None:
    session = create(client)
    secret = {"Authorization": f"Bearer {session['client_secret']}"}
    url = f"{server.url}/api/sessions/{session['id']}/stream"
    # PAYLIVE_MAX_SOCKETS_PER_SESSION=1: one stream open holds the session's place.
    with httpx.Client(timeout=10) as holder, holder.stream("GET", url, headers=secret) as held:
        assert held.status_code == 200
        ticket = ticket_for(client, session)
        refused = client.get(f"{url}?ticket={ticket}")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_sockets"
    # The place is free again: "not now" was the answer, so the same request may be
    # sent again as it was.
    time.sleep(0.3)
    again = client.get(
        f"/api/sessions/{session['id']}/events?ticket={ticket}&wait=0",
    )
    assert again.status_code == 200, again.text


def test_a_poll_refused_429_too_many_sockets_does_not_spend_its_ticket(
    server: Server, client: httpx.Client
) -> None:
    """A poll learns that it would wait, and so takes a socket's place, only once it
    has read the session: the ticket was spent before, so the 429 used it up."""
    session = create(client)
    secret = {"Authorization": f"Bearer {session['client_secret']}"}
    url = f"{server.url}/api/sessions/{session['id']}/stream"
    ticket = ticket_for(client, session)
    # Nothing after `since`: the poll would wait, which needs the session's one place.
    poll = f"/api/sessions/{session['id']}/events?ticket={ticket}&since={session['seq']}"
    with httpx.Client(timeout=10) as holder, holder.stream("GET", url, headers=secret) as held:
        assert held.status_code == 200
        refused = client.get(poll + "&wait=1000")
        assert refused.status_code == 429, refused.text
        assert refused.json()["error"]["code"] == "too_many_sockets"
    time.sleep(0.3)
    again = client.get(poll + "&wait=0")
    assert again.status_code == 200, again.text


def test_a_poll_refused_404_does_not_spend_its_ticket(server: Server, client: httpx.Client) -> None:
    """An admin ticket may watch any session, so a poll for one that does not exist is
    let through to the read, and its 404 came after the ticket was spent."""
    session = create(client)
    reply = client.post("/api/tickets", headers=ADMIN)
    assert reply.status_code == 201, reply.text
    ticket = reply.json()["ticket"]
    missing = client.get(f"/api/sessions/ps_nobody/events?ticket={ticket}&wait=0")
    assert missing.status_code == 404, missing.text
    found = client.get(f"/api/sessions/{session['id']}/events?ticket={ticket}&wait=0")
    assert found.status_code == 200, found.text
    spent = client.get(f"/api/sessions/{session['id']}/events?ticket={ticket}&wait=0")
    assert spent.status_code == 401, spent.text  # and good once, as before


def test_a_stream_to_an_unknown_session_does_not_spend_its_ticket(
    server: Server, client: httpx.Client
) -> None:
    """The stream joined the hub and read the session only after the ticket was spent,
    so its 404 used the ticket up."""
    session = create(client)
    reply = client.post("/api/tickets", headers=ADMIN)
    assert reply.status_code == 201, reply.text
    ticket = reply.json()["ticket"]
    missing = client.get(f"/api/sessions/ps_nobody/stream?ticket={ticket}")
    assert missing.status_code == 404, missing.text
    found = client.get(f"/api/sessions/{session['id']}/events?ticket={ticket}&wait=0")
    assert found.status_code == 200, found.text


def test_a_socket_to_an_unknown_session_does_not_spend_its_ticket(
    server: Server, client: httpx.Client
) -> None:
    session = create(client)
    reply = client.post("/api/tickets", headers=ADMIN)
    assert reply.status_code == 201, reply.text
    ticket = reply.json()["ticket"]
    code, _ = socket_close(f"{server.ws_url}/ws/sessions/ps_nobody?ticket={ticket}")
    assert code == 4404
    opens_live(f"{server.ws_url}/ws/sessions/{session['id']}?ticket={ticket}")


def test_the_admin_feed_refusing_a_customer_ticket_does_not_spend_it(
    server: Server, client: httpx.Client
) -> None:
    """The admin socket asked the ticket's kind only once it had spent it."""
    session = create(client)
    ticket = ticket_for(client, session)
    code, _ = socket_close(f"{server.ws_url}/ws/admin?ticket={ticket}")
    assert code == 4401
    opens_live(f"{server.ws_url}/ws/sessions/{session['id']}?ticket={ticket}")


# Opens made at the same time all passed the per-session cap

# Opens of one session sent together, and how many sessions are tried: the cap was
# asked before the ticket's round trip to Redis, and the stream or socket counted only
# after it, so opens whose checks fell in the same moment all passed.
AT_ONCE = 6
ROUNDS = 3


async def _streams_at_once(server: Server, session_id: str, tickets: list[str]) -> list[int]:
    """The status of each stream opened with ``tickets`` together; all held open until
    every one has answered, so that no place is given back in between."""
    path = f"/api/sessions/{session_id}/stream"
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        contextlib.AsyncExitStack() as held,
    ):

        async def one(ticket: str) -> int:
            response = await held.enter_async_context(
                http.stream("GET", path, params={"ticket": ticket})
            )
            return response.status_code

        return list(await asyncio.gather(*(one(t) for t in tickets)))


async def _sockets_at_once(server: Server, session_id: str, tickets: list[str]) -> list[Any]:
    """The first message's type of each socket opened with ``tickets`` together, or
    its close code; all held open until every one has answered."""
    base = f"{server.ws_url}/ws/sessions/{session_id}?ticket="
    conns = await asyncio.gather(
        *(
            connect_async(base + t, subprotocols=["paylive.v1.json"], open_timeout=5)  # type: ignore[list-item]
            for t in tickets
        )
    )
    outcomes: list[Any] = []
    try:
        for conn in conns:
            try:
                outcomes.append(json.loads(await asyncio.wait_for(conn.recv(), 5))["type"])
            except ConnectionClosed:
                outcomes.append(conn.close_code)
    finally:
        for conn in conns:
            await conn.close()
    return outcomes


def test_streams_opened_at_once_pass_the_cap_no_more_than_it_allows(
    on_redis: Server,
) -> None:
    with httpx.Client(base_url=on_redis.url, timeout=10) as plain:
        for _ in range(ROUNDS):
            session = create(plain)
            tickets = [ticket_for(plain, session) for _ in range(AT_ONCE)]
            statuses = asyncio.run(_streams_at_once(on_redis, session["id"], tickets))
            # PAYLIVE_MAX_SOCKETS_PER_SESSION=1
            assert sorted(statuses) == [200] + [429] * (AT_ONCE - 1), statuses


def test_sockets_opened_at_once_pass_the_cap_no_more_than_it_allows(
    on_redis: Server,
) -> None:
    with httpx.Client(base_url=on_redis.url, timeout=10) as plain:
        for _ in range(ROUNDS):
            session = create(plain)
            tickets = [ticket_for(plain, session) for _ in range(AT_ONCE)]
            outcomes = asyncio.run(_sockets_at_once(on_redis, session["id"], tickets))
            assert outcomes.count("snapshot") == 1, outcomes
            assert outcomes.count(1013) == AT_ONCE - 1, outcomes


# Patterns anchored with `$` took a trailing newline (re.match): now fullmatch


@pytest.mark.parametrize("order_id", ["order-1\n"])
def test_an_order_id_with_a_trailing_newline_is_refused(
    client: httpx.Client, order_id: str
) -> None:
    # openapi.json: order_id matches ^[\x21-\x7e]{1,128}$ (JSON Schema: no newline).
    reply = client.post(
        "/api/sessions",
        json={"order_id": order_id, "amount": 100, "currency": "EUR"},
        headers=MERCHANT,
    )
    assert reply.status_code == 422, f"{reply.status_code}: stored as {reply.text[:120]}"
    assert reply.json()["error"]["code"] == "invalid_field"


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/api/events?limit=5%0A", MERCHANT),
        ("/api/events?after=5%0A", MERCHANT),
        ("/api/admin/search?limit=5%0A", ADMIN),
        ("/api/admin/deliveries?limit=5%0A", ADMIN),
        ("/api/admin/search?id=ps_x%0A", ADMIN),
        ("/api/admin/audit?staff=admin%0A", ADMIN),
    ],
)
def test_a_query_value_with_a_trailing_newline_is_422(
    client: httpx.Client, path: str, headers: dict[str, str]
) -> None:
    reply = client.get(path, headers=headers)
    assert reply.status_code == 422, f"{path}: {reply.status_code} {reply.text[:120]}"


def test_a_decline_code_with_a_trailing_newline_is_refused(client: httpx.Client) -> None:
    session = create(client)
    secret = {"Authorization": f"Bearer {session['client_secret']}"}
    started = client.post(
        f"/api/sessions/{session['id']}/attempts",
        json={"payment_method": {"card": "4242424242424242"}},
        headers=secret,
    )
    assert started.status_code == 202, started.text
    reply = client.post(
        f"/api/sessions/{session['id']}/complete",
        json={"attempt": 1, "outcome": "declined", "decline_code": "card_declined\n"},
        headers=MERCHANT,
    )
    assert reply.status_code == 422, f"{reply.status_code}: {reply.text[:300]}"


# Request headers without end: httptools holds a header until it ends


def test_request_headers_past_32_kib_are_answered_431_and_closed(server: Server) -> None:
    pad = b"X-Pad: " + b"a" * 1000 + b"\r\n"
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    answer = exchange(server.port, request + pad * 40 + b"\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b"connection: close" in head.lower()
    assert json.loads(body)["error"]["code"] == "headers_too_large"
    # A client that goes on sending is cut off, not held: its header never ends here.
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(request)
        sent, deadline = 0, time.monotonic() + 5
        with pytest.raises(OSError):
            while time.monotonic() < deadline:
                sock.sendall(pad * 64)
                sent += len(pad) * 64
        # Read and dropped for at most a second (LINGER_S), then closed.
    finally:
        sock.close()
    # Just under the bound is a request like any other.
    answer = exchange(server.port, request + pad * 28 + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]


def test_a_later_request_on_a_kept_alive_connection_has_its_headers_timed(
    server: Server,
) -> None:
    """Beside the header bound, counted in the parser's callbacks, the start of every
    request still arms the header timer and stops the keep-alive one: a later request
    that never ends its headers is closed by the header timeout, not the keep-alive."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        healthz_on(sock)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        started = time.monotonic()
        assert closed_by_server(sock, started + 5) == b""
        assert time.monotonic() - started < 4, "closed by the keep-alive, not the header timer"
    finally:
        sock.close()


# A command place held for a path that is a command only while percent-encoded


def test_a_pipelined_request_whose_path_is_a_command_only_encoded_leaks_no_place(
    server: Server, client: httpx.Client
) -> None:
    """The connection holds a command's place from its request line; the door, which
    gives it back, reads the decoded path. ``/api/sessions/a%2Fb/cancel`` matched as a
    command before decoding and not after: with a request pipelined behind it, nothing
    gave its place back, and three such connections refused every command 503."""
    pipelined = (
        b"POST /api/sessions/a%2Fb/cancel HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    for _ in range(3):  # PAYLIVE_MAX_IN_FLIGHT
        answers = exchange(server.port, pipelined, wait_s=5)
        assert answers.count(b"HTTP/1.1 ") == 2, answers
    reply = client.post(
        "/api/sessions",
        json={"order_id": "order-1", "amount": 1999, "currency": "EUR"},
        headers=MERCHANT,
    )
    assert reply.status_code == 201, (reply.status_code, reply.text)


# Commands pipelined on one connection took places past their session's share


def _behind_a_held_poll(
    server: Server, client: httpx.Client, polled: dict[str, Any], commands: bytes
) -> tuple[httpx.Response, list[bytes], bytes]:
    """``commands`` pipelined behind a held poll of ``polled``'s session, on one
    connection; meanwhile another client creates a session. Its answer, the statuses
    of the poll and the commands in order, and what the connection was sent."""
    auth = b"Authorization: Bearer " + str(polled["client_secret"]).encode() + b"\r\n"
    poll = b"GET /api/sessions/%s/events?since=%d&wait=3000 HTTP/1.1\r\nHost: x\r\n" % (
        str(polled["id"]).encode(),
        polled["seq"],
    )
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        sock.sendall(poll + auth + b"\r\n" + commands)
        time.sleep(0.5)  # all parsed, the poll still held
        other = client.post(
            "/api/sessions",
            json={"order_id": "order-other", "amount": 500, "currency": "EUR"},
            headers=MERCHANT,
        )
        answers = closed_by_server(sock, time.monotonic() + 10)
    finally:
        sock.close()
    assert answers is not None
    return other, re.findall(rb"HTTP/1\.1 (\d{3}) ", answers), answers


def _check(session: dict[str, Any], last: bool) -> bytes:
    """A pipelined ``check`` of ``session``; the last one closes the connection."""
    return (
        b"POST /api/sessions/%s/check HTTP/1.1\r\nHost: x\r\n" % str(session["id"]).encode()
        + b"Authorization: Bearer " + str(session["client_secret"]).encode() + b"\r\n"
        + (b"Connection: close\r\n" if last else b"")
        + b"Content-Length: 0\r\n\r\n"
    )  # fmt: skip


def test_commands_pipelined_behind_a_held_poll_hold_no_more_than_their_share(
    server: Server, client: httpx.Client
) -> None:
    """The connection holds a place for each command it has whole, and a pipelined
    one was held even on a full worker (its answer must wait its turn); the session's
    share was asked only at the door, when each command's turn came. So six commands
    of one session pipelined behind a held poll took every place of the worker for as
    long as the poll was held, and everyone else was refused 503. One place at a time
    is the session's share (PAYLIVE_MAX_IN_FLIGHT_PER_SESSION=1)."""
    session = create(client)
    commands = _check(session, False) * 5 + _check(session, True)
    other, statuses, answers = _behind_a_held_poll(server, client, session, commands)
    assert other.status_code == 201, (other.status_code, other.text)
    # The poll, then each command in its turn, as a lone one would be answered.
    assert statuses[0] == b"200" and len(statuses) == 7, answers
    assert len(set(statuses[1:])) == 1 and statuses[1] not in (b"429", b"503"), answers


def test_commands_pipelined_behind_a_held_poll_hold_no_place_before_their_turn(
    server: Server, client: httpx.Client
) -> None:
    """A command pipelined behind a request not yet answered cannot start before that
    one is answered, and a held poll (or an SSE stream) may not be for a long time. It
    held a place from the moment it was parsed all the same: one connection with a
    command of each of three sessions (each within its share) behind a held poll took
    all three places of the worker (PAYLIVE_MAX_IN_FLIGHT=3), and everyone else was
    refused 503 for as long as the poll was held. A pipelined command now takes its
    place when its turn comes."""
    sessions = [create(client) for _ in range(3)]
    commands = b"".join(_check(s, n == len(sessions) - 1) for n, s in enumerate(sessions))
    other, statuses, answers = _behind_a_held_poll(server, client, sessions[0], commands)
    assert other.status_code == 201, (other.status_code, other.text)
    # The poll, then each command in its turn, each answered as a lone one would be.
    assert statuses[0] == b"200" and len(statuses) == 4, answers
    assert set(statuses[1:]) == {b"200"}, answers
