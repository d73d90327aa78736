"""The load generator's worker, speaking to the python-socketio peer.

Raw engine.io v4 over one WebSocket per socket (the python-socketio client holds an
aiohttp session and two tasks per connection: too heavy at thousands of sockets on
the same two cores as the servers). Everything else, the driver, the accounting
and the phases, is ``paylive.load``'s. Started by ``bench`` as
``python -m bench.peer.client``.
"""

from __future__ import annotations

import asyncio
import json
import time

from websockets.asyncio.client import ClientConnection

from paylive.load.config import Config
from paylive.load.dialect import OPEN_TIMEOUT_S, Message
from paylive.load.records import Tracked
from paylive.load.worker import Target, main

PING, PONG, EVENT, CONNECTED = "2", "3", "42", "40"
REFUSED = ("41", "44")  # disconnect, or connect error
PATH = "/socket.io/?EIO=4&transport=websocket"


class Refused(Exception):
    """The peer refused the socket's credentials."""


class PeerDialect:
    subprotocols: list[str] | None = None
    max_size = 2**20

    def __init__(self, conf: Config) -> None:
        self.conf = conf

    def customer_url(self, session: Tracked, since: int | None) -> str:
        return self.conf.ws_url + PATH  # no replay: a reconnect gets a snapshot

    def admin_url(self) -> str:
        return self.conf.ws_url + PATH

    async def _greet(self, conn: ClientConnection, auth: dict[str, str]) -> Message:
        """Open the namespace with ``auth``; the first event (its snapshot or hello)."""
        deadline = time.monotonic() + OPEN_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no first event from the peer")
            raw = await asyncio.wait_for(conn.recv(), left)
            if not isinstance(raw, str):
                continue
            if raw.startswith("0"):  # engine.io open
                await conn.send(CONNECTED + json.dumps(auth))
            elif raw.startswith(REFUSED):
                raise Refused(raw)
            else:
                message = await self.frame(conn, raw)
                if message is not None:
                    return message

    async def greet_customer(
        self, conn: ClientConnection, session: Tracked, since: int | None
    ) -> Message:
        return await self._greet(conn, {"session": session.id, "token": session.secret})

    async def greet_admin(self, conn: ClientConnection) -> Message:
        return await self._greet(conn, {"admin": self.conf.admin_token or ""})

    async def frame(self, conn: ClientConnection, raw: str | bytes) -> Message | None:
        if raw == PING:
            await conn.send(PONG)
            return None
        if isinstance(raw, str) and raw.startswith(EVENT):
            _name, data = json.loads(raw[2:])
            return data  # type: ignore[no-any-return]
        return None


class PeerApi:
    def __init__(self, conf: Config) -> None:
        self.conf = conf
        self.headers = {"Authorization": f"Bearer {conf.api_key}"}

    def create(self, number: int) -> tuple[str, Message]:
        return "/sessions", {
            "order_id": f"load-{self.conf.index}-{number}",
            "amount": 1999,
            "currency": "EUR",
        }

    def change(self, session: Tracked) -> tuple[str, Message] | None:
        return f"/sessions/{session.id}/change", {}

    def read(self, session: Tracked) -> str:
        return f"/sessions/{session.id}"


def peer_target(conf: Config) -> Target:
    return Target(PeerApi(conf), PeerDialect(conf))


if __name__ == "__main__":
    raise SystemExit(main(peer_target))
