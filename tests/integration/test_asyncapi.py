"""The WebSocket protocol's description (docs/asyncapi.yaml) against the server: its
message types and close codes are the server's, and every message a real session
and admin feed receive, in either codec, fits the schema the description gives it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from paylive.core.protocol import CloseCode
from paylive.errors import Refused
from paylive.web.sockets import parse_command

from ..support.asyncapi import DOCUMENT, check
from ..support.client import Socket, create, open_socket, session_url
from ..support.servers import ADMIN_TOKEN, Server

pytestmark = pytest.mark.anyio

MESSAGES = DOCUMENT["components"]["messages"]
NEVER = "4000000000000408"
OK = "4242424242424242"


def messages_of(operation: str) -> set[str]:
    """The message names an operation lists."""
    refs = DOCUMENT["operations"][operation]["messages"]
    return {MESSAGES[ref["$ref"].rsplit("/", 1)[1]]["name"] for ref in refs}


def test_the_description_is_asyncapi_3_with_the_servers_vocabulary() -> None:
    assert DOCUMENT["asyncapi"].startswith("3.")
    assert {c["address"] for c in DOCUMENT["channels"].values()} == {
        "/ws/sessions/{session_id}",
        "/ws/admin",
    }
    for code in CloseCode:
        assert f"- {int(code)} " in DOCUMENT["info"]["description"]
    # Every command described is one the server takes, and no other type is.
    for name in messages_of("sendCustomerCommands"):
        frame: dict[str, Any] = {"type": name}
        if name == "pay":
            frame["payment_method"] = {"card": OK}
        if name == "seen":
            frame["status"] = "succeeded"
        parse_command(frame)
    with pytest.raises(Refused):
        parse_command({"type": "refund"})


async def drain(sock: Socket, until: str, timeout: float = 8.0) -> None:
    await sock.until(lambda m: m["type"] == until, timeout)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
async def test_every_message_of_a_session_fits_its_description(
    server: Server, binary: bool
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        feed = await open_socket(f"{server.ws_url}/ws/admin?token={ADMIN_TOKEN}", binary=binary)
        await drain(feed, "admin.snapshot")
        session = await create(http, metadata={"cart": "c-1", "n": 2, "ok": True})
        sock = await open_socket(session_url(server.ws_url, session), binary=binary)
        await sock.send({"type": "ping"})
        await sock.send({"type": "pay", "payment_method": {"card": NEVER}, "ref": "p1"})
        await drain(sock, "retry_prompt")  # a countdown, then the timeout
        await sock.send({"type": "pay", "ref": 7})  # refused: pay needs a payment method
        await sock.send({"type": "cancel", "ref": "c1"})
        await sock.send({"type": "seen", "status": "cancelled", "ref": "s1"})
        await sock.send({"type": "dance", "ref": "x"})
        await sock.until(lambda m: m["type"] == "error" and m["data"].get("ref") == "x", 8.0)
        await feed.send({"type": "ping"})
        await drain(feed, "pong")
        await drain(feed, "summary", timeout=3)
    causes = [m["data"]["cause"] for m in sock.received if m["type"] == "state"]
    assert causes[-1] == "outcome_seen", causes
    seen = {m["type"] for m in sock.received} | {m["type"] for m in feed.received}
    assert seen >= {"snapshot", "state", "retry_prompt", "countdown", "ack", "error", "pong"}
    assert seen >= {"admin.snapshot", "admin.created", "summary"}
    assert {m["type"] for m in sock.received} <= messages_of("receiveCustomerMessages")
    assert {m["type"] for m in feed.received} <= messages_of("receiveAdminFeed")
    for message in sock.received:
        check(message, "customer")
    for message in feed.received:
        check(message, "admin")
    await sock.conn.close()
    await feed.conn.close()
