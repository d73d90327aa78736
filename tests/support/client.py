"""Test clients that know only docs/protocol.md: HTTP with httpx, sockets with websockets."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import msgpack
from websockets.asyncio.client import ClientConnection, connect

from .servers import ADMIN_TOKEN, API_KEY

Msg = dict[str, Any]


def merchant(token: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def admin() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def create(http: httpx.AsyncClient, **body: Any) -> Msg:
    payload = {"order_id": "order-1", "amount": 1999, "currency": "EUR", **body}
    reply = await http.post("/api/sessions", json=payload, headers=merchant())
    assert reply.status_code == 201, reply.text
    return reply.json()


async def sandbox_outage(http: httpx.AsyncClient, seconds: float) -> None:
    """The sandbox provider unreachable for ``seconds`` from now; 0 ends an outage."""
    reply = await http.post("/api/admin/sandbox/outage", json={"seconds": seconds}, headers=admin())
    assert reply.status_code == 200, reply.text
    assert (reply.json()["outage_until"] is None) == (seconds == 0)


# How long a socket waits for a message it expects: a wait ends on the message, so a
# long one costs nothing when all is well. 5 s was overrun by payments under the
# parallel suite on a slow 2-core machine; a test of a bound passes its own timeout.
WAIT_S = 10.0


class Socket:
    """A customer or admin socket that keeps every message it received."""

    def __init__(self, conn: ClientConnection, binary: bool = False) -> None:
        self.conn = conn
        self.binary = binary
        self.received: list[Msg] = []

    async def send(self, message: Msg) -> None:
        if self.binary:
            await self.conn.send(msgpack.packb(message, use_bin_type=True))
        else:
            await self.conn.send(json.dumps(message))

    async def recv(self, timeout: float = WAIT_S) -> Msg:
        with anyio.fail_after(timeout):
            raw = await self.conn.recv()
        if self.binary:
            assert isinstance(raw, bytes), "msgpack sockets get binary frames"
            message = msgpack.unpackb(raw, raw=False)
        else:
            assert isinstance(raw, str), "JSON sockets get text frames"
            message = json.loads(raw)
        self.received.append(message)
        return message

    async def until(self, predicate: Callable[[Msg], bool], timeout: float = WAIT_S) -> Msg:
        """The first message (from now on) that satisfies ``predicate``."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                message = await self.recv(left)
            except TimeoutError:
                raise TimeoutError(
                    f"no matching message in {timeout} s; got {self.summary()}"
                ) from None
            if predicate(message):
                return message

    async def state(self, status: str, timeout: float = WAIT_S) -> Msg:
        return await self.until(
            lambda m: m["type"] == "state" and m["data"]["session"]["status"] == status, timeout
        )

    def types(self) -> list[str]:
        return [m["type"] for m in self.received]

    def summary(self) -> list[str]:
        """What came, shortly: each message's type and what it says happened (a state's
        status and cause, an error's code), for a failure's message."""
        said = []
        for m in self.received:
            data = m.get("data") if isinstance(m.get("data"), dict) else {}
            session = data.get("session") if isinstance(data.get("session"), dict) else {}
            detail = str(data.get("code") or data.get("cause") or "")
            status = str(session.get("status", ""))
            said.append(":".join(x for x in (m["type"], status, detail) if x))
        return said

    def durable(self) -> list[Msg]:
        return [m for m in self.received if m["type"] in ("state", "retry_prompt")]

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Wait for the server to close the socket; its close code."""
        with anyio.fail_after(timeout):
            try:
                while True:
                    await self.conn.recv()
            except Exception:
                pass
        return self.conn.close_code


async def open_socket(
    url: str,
    *,
    binary: bool = False,
    subprotocols: list[str] | None = None,
    origin: str | None = None,
    max_size: int | None = 2**20,
) -> Socket:
    if subprotocols is None:
        subprotocols = ["paylive.v1.msgpack"] if binary else ["paylive.v1.json"]
    conn = await connect(
        url,
        subprotocols=subprotocols or None,  # type: ignore[arg-type]
        origin=origin,  # type: ignore[arg-type]
        max_size=max_size,
        open_timeout=5,
    )
    return Socket(conn, binary)


def session_url(
    ws_url: str, session: Msg, since: int | None = None, token: str | None = None
) -> str:
    url = f"{ws_url}/ws/sessions/{session['id']}?token={token or session['client_secret']}"
    return url if since is None else f"{url}&since={since}"
