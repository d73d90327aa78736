"""A command frame's ``key`` (docs/protocol.md section 4, v1.2): honoured as the HTTP
route's ``Idempotency-Key`` is, in the same store and scope, with the body the route
would read derived from the frame, so a pay whose answer was lost with its socket can
be sent again on another socket, or over HTTP, and is decided once."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from ..support.client import Socket, create, open_socket, session_url
from ..support.servers import Server

pytestmark = pytest.mark.anyio

# The sandbox posts nowhere: the attempts these tests start wait for their result.
SERVER_ENV = {"PAYLIVE_SANDBOX_WEBHOOK_URL": "http://127.0.0.1:9/nowhere"}

NEVER = "4000000000000408"  # the sandbox never answers this card
REFS = itertools.count()
PAY = {"type": "pay", "payment_method": {"card": NEVER}}


Opener = Callable[[dict[str, Any]], Awaitable[Socket]]


@pytest.fixture
async def sockets_of(server: Server) -> AsyncIterator[Opener]:
    """Opens a socket of a session, past its first message; each closed after the test."""
    socks: list[Socket] = []

    async def open_one(session: dict[str, Any]) -> Socket:
        sock = await open_socket(session_url(server.ws_url, session))
        socks.append(sock)
        assert (await sock.recv())["type"] == "snapshot"
        return sock

    yield open_one
    for sock in socks:
        await sock.conn.close()


async def answer(sock: Socket, frame: dict[str, Any]) -> dict[str, Any]:
    """The ack or error that answers ``frame`` (sent with a ref of its own)."""
    ref = f"r{next(REFS)}"
    await sock.send({**frame, "ref": ref})
    return await sock.until(lambda m: m["type"] in ("ack", "error") and m["data"].get("ref") == ref)


def said(message: dict[str, Any]) -> str:
    return "ack" if message["type"] == "ack" else str(message["data"]["code"])


async def attempts(http: httpx.AsyncClient, session: dict[str, Any]) -> int:
    auth = {"Authorization": f"Bearer {session['client_secret']}"}
    reply = await http.get(f"/api/sessions/{session['id']}", headers=auth)
    assert reply.status_code == 200, reply.text
    return len(reply.json()["attempts"])


async def test_a_keyed_pay_sent_again_on_another_socket_starts_one_attempt(
    sockets_of: Opener, http: httpx.AsyncClient
) -> None:
    session = await create(http)
    first = await sockets_of(session)
    got = await answer(first, {**PAY, "key": "pay-1"})
    await first.conn.close()  # its answer "lost" with it: the page sends it again
    second = await sockets_of(session)
    again = await answer(second, {**PAY, "key": "pay-1"})
    assert (said(got), said(again)) == ("ack", "ack"), second.summary()
    assert again["data"]["ref"] != got["data"]["ref"], "the new frame's ref"
    assert again["seq"] == got["seq"] == 1, "the session's seq now (attempt_started)"
    assert await attempts(http, session) == 1
    # Another body under the key is refused as the header's rules say.
    card = {"card": "4242424242424242"}
    other = await answer(second, {"type": "pay", "payment_method": card, "key": "pay-1"})
    assert said(other) == "idempotency_key_reused"
    # Keyless, as before: decided anew, and refused (an attempt is running).
    bare = await answer(second, PAY)
    assert said(bare) == "invalid_state"
    assert await attempts(http, session) == 1


async def test_a_keyed_pay_sent_again_over_http_is_the_same_request(
    sockets_of: Opener, http: httpx.AsyncClient
) -> None:
    session = await create(http)
    sock = await sockets_of(session)
    assert said(await answer(sock, {**PAY, "key": "pay-2"})) == "ack"
    auth = {"Authorization": f"Bearer {session['client_secret']}", "Idempotency-Key": "pay-2"}
    path = f"/api/sessions/{session['id']}/attempts"
    again = await http.post(path, json={"payment_method": PAY["payment_method"]}, headers=auth)
    assert again.status_code == 202, again.text
    assert len(again.json()["attempts"]) == 1
    other = await http.post(path, json={}, headers=auth)
    assert other.status_code == 422 and other.json()["error"]["code"] == "idempotency_key_reused"
    assert await attempts(http, session) == 1


async def test_a_keyed_cancel_on_the_socket_answers_again_what_it_did(
    sockets_of: Opener, http: httpx.AsyncClient
) -> None:
    session = await create(http)
    sock = await sockets_of(session)
    assert said(await answer(sock, {"type": "cancel", "key": "c-1"})) == "ack"
    assert said(await answer(sock, {"type": "cancel", "key": "c-1"})) == "ack"
    assert said(await answer(sock, {"type": "cancel"})) == "invalid_state"
    # The same request over HTTP (the body the route reads: {}), and a refusal kept as
    # an answer is the socket's error frame: a keyed seen before the outcome.
    auth = {"Authorization": f"Bearer {session['client_secret']}", "Idempotency-Key": "c-1"}
    reply = await http.post(f"/api/sessions/{session['id']}/cancel", json={}, headers=auth)
    assert reply.status_code == 200 and reply.json()["status"] == "cancelled", reply.text
    wrong = {"type": "seen", "status": "succeeded", "key": "s-1"}
    assert said(await answer(sock, wrong)) == "invalid_state"
    assert said(await answer(sock, wrong)) == "invalid_state"
    assert said(await answer(sock, {**wrong, "status": "failed"})) == "idempotency_key_reused"


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", 7, None])
async def test_a_key_out_of_the_rules_is_refused(
    sockets_of: Opener, http: httpx.AsyncClient, key: Any
) -> None:
    session = await create(http)
    sock = await sockets_of(session)
    refused = await answer(sock, {"type": "cancel", "key": key})
    assert said(refused) == "invalid_field" and "key" in refused["data"]["message"]
    assert said(await answer(sock, {"type": "ping", "key": "k"})) == "invalid_field"
