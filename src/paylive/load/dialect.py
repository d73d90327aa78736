"""How the generator speaks to a server: its URLs, its socket handshake and its frames.

``Dialect`` (sockets) and ``Api`` (HTTP requests) are the two seams of the generator:
``PayliveDialect`` and ``PayliveApi`` speak docs/protocol.md; another server can be
measured with the same driver, sockets and accounting by giving its own pair (the
benchmark's python-socketio peer does).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Protocol

import msgpack
from websockets.asyncio.client import ClientConnection

from ..core.protocol import SUBPROTOCOLS, Status
from .config import Config
from .records import Tracked

OPEN_TIMEOUT_S = 15.0

# The sandbox never answers this card: the attempt stays `processing` until the
# load generator interrupts it, so the generator alone decides when states change.
NEVER_ANSWERS = "4000000000000408"

Message = dict[str, Any]


class Dialect(Protocol):
    """A server's WebSocket side, as the generator uses it."""

    subprotocols: list[str] | None
    max_size: int  # of one customer message; admin feeds get more

    def customer_url(self, session: Tracked, since: int | None) -> str: ...

    def admin_url(self) -> str: ...

    async def greet_customer(
        self, conn: ClientConnection, session: Tracked, since: int | None
    ) -> Message | None:
        """Whatever the handshake needs; the first message (a snapshot), or None when a
        socket resumed with ``since`` may rightly get nothing yet."""
        ...

    async def greet_admin(self, conn: ClientConnection) -> Message: ...

    async def frame(self, conn: ClientConnection, raw: str | bytes) -> Message | None:
        """A received frame as a message, or None for a frame the dialect handled itself."""
        ...


class Api(Protocol):
    """A server's HTTP side: paths and bodies; the driver sends them and reads the answers,
    which carry the session's ``id`` and ``client_secret`` (on creation), ``seq`` and
    ``status``."""

    headers: dict[str, str]

    def create(self, number: int) -> tuple[str, Message]: ...

    def change(self, session: Tracked) -> tuple[str, Message] | None:
        """The next state change for ``session``, or None when it has none left."""
        ...

    def read(self, session: Tracked) -> str:
        """The path that answers the session with its current ``seq``."""
        ...


def decode(raw: str | bytes) -> Message:
    if isinstance(raw, bytes):
        return msgpack.unpackb(raw, raw=False)  # type: ignore[no-any-return]
    return json.loads(raw)  # type: ignore[no-any-return]


class PayliveDialect:
    """docs/protocol.md section 4: a snapshot first, then one message a frame."""

    max_size = 2**20

    def __init__(self, conf: Config) -> None:
        self.conf = conf
        self.subprotocols: list[str] | None = [SUBPROTOCOLS[conf.format]]

    def customer_url(self, session: Tracked, since: int | None) -> str:
        url = f"{self.conf.ws_url}/ws/sessions/{session.id}?token={session.secret}"
        if since is not None and since >= 0:
            url += f"&since={since}"
        return url

    def admin_url(self) -> str:
        return f"{self.conf.ws_url}/ws/admin?token={self.conf.admin_token or ''}"

    async def greet_customer(
        self, conn: ClientConnection, session: Tracked, since: int | None
    ) -> Message | None:
        if since is not None and since >= 0:
            # Resumed: the server replays what the page missed, and a page that missed
            # nothing gets nothing until the session's next event (docs/protocol.md
            # section 4.1). Waiting for a first message would count an up-to-date page
            # as a failed reconnect once OPEN_TIMEOUT_S passed; the reader takes what comes.
            return None
        return decode(await asyncio.wait_for(conn.recv(), OPEN_TIMEOUT_S))

    async def greet_admin(self, conn: ClientConnection) -> Message:
        return decode(await asyncio.wait_for(conn.recv(), OPEN_TIMEOUT_S))

    async def frame(self, conn: ClientConnection, raw: str | bytes) -> Message | None:
        return decode(raw)


class PayliveApi:
    """The merchant API of docs/protocol.md section 3, driven round the attempt cycle:
    pay (never answered), interrupt, retry, until the session's attempts run out."""

    def __init__(self, conf: Config) -> None:
        self.conf = conf
        self.headers = {"Authorization": f"Bearer {conf.api_key}"}

    def create(self, number: int) -> tuple[str, Message]:
        return "/api/sessions", {
            "order_id": f"load-{self.conf.index}-{number}",
            "amount": 1999,
            "currency": "EUR",
            "metadata": {"load": True},
        }

    def change(self, session: Tracked) -> tuple[str, Message] | None:
        if session.status == Status.PROCESSING:
            return f"/api/sessions/{session.id}/interrupt", {"reason": "network_error"}
        if session.status in (Status.CREATED, Status.INTERRUPTED):
            return f"/api/sessions/{session.id}/attempts", {
                "payment_method": {"card": NEVER_ANSWERS}
            }
        return None

    def read(self, session: Tracked) -> str:
        return f"/api/sessions/{session.id}"
