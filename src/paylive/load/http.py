"""HTTP for ``paylive load``: a fixed set of keep-alive connections, one request each at a time.

Two interchangeable pools with one method, ``request(method, path, json, headers)
-> (status, body)``:

- ``RawPool`` (the default): HTTP/1.1 written and parsed by hand over asyncio
  streams. Measured on this 2-core machine it costs about a fifth of httpx's CPU per
  request, which matters when the generator shares the machine with the server it
  measures: at 2,000 changes/s httpx alone would need most of a core.
- ``HttpxPool``: httpx clients of one connection each (one client with a big pool
  gets slower per request as the pool grows: 860 requests/s with one connection,
  180 with 32, measured here).

Both bound the requests in flight by their size: a request waits for a free
connection.
"""

from __future__ import annotations

import sys

# httpcore asks `import sniffio` on every request; without sniffio installed (anyio
# 4.16 no longer needs it) each failed import rescans sys.path, a third of the
# client's CPU per request. A None entry makes the import fail at once, and
# httpcore then assumes asyncio, which is what runs here. Only load-generator
# processes import this module.
sys.modules.setdefault("sniffio", None)  # type: ignore[arg-type]

import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
from typing import Any, Protocol  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import httpx  # noqa: E402

from ..errors import PayliveError  # noqa: E402

REQUEST_TIMEOUT_S = 15.0
MAX_RESPONSE_BYTES = 1 << 20


class HttpFailure(PayliveError):
    """No HTTP answer (connection refused or reset, timeout, malformed reply)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


class Pool(Protocol):
    size: int

    async def request(
        self, method: str, path: str, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]: ...

    async def aclose(self) -> None: ...


def _decode(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        return {}


class _Conn:
    __slots__ = ("reader", "writer", "used")

    def __init__(self) -> None:
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.used = False

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None
        self.used = False


class RawPool:
    def __init__(self, base_url: str, size: int) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http":
            raise ValueError("the raw client speaks plain http only; use --http-client httpx")
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.host_header = parts.netloc.encode()
        self.size = max(1, size)
        self._conns = [_Conn() for _ in range(self.size)]
        self._idle: asyncio.Queue[_Conn] = asyncio.Queue()
        for conn in self._conns:
            self._idle.put_nowait(conn)

    async def request(
        self, method: str, path: str, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        body = b"" if json_body is None else json.dumps(json_body, separators=(",", ":")).encode()
        head = [f"{method} {path} HTTP/1.1".encode(), b"Host: " + self.host_header]
        for name, value in (headers or {}).items():
            head.append(f"{name}: {value}".encode())
        if json_body is not None:
            head.append(b"Content-Type: application/json")
        head.append(b"Content-Length: " + str(len(body)).encode())
        message = b"\r\n".join(head) + b"\r\n\r\n" + body
        conn = await self._idle.get()
        try:
            # A reused connection the server closed while idle (keep-alive timeout)
            # fails before any answer: that request was never read, so sending it
            # once more on a fresh connection cannot apply it twice.
            for attempt in (1, 2):
                reused = conn.used
                try:
                    return await asyncio.wait_for(self._exchange(conn, message), REQUEST_TIMEOUT_S)
                except _Stale:
                    conn.close()
                    if not reused or attempt == 2:
                        raise HttpFailure("ConnectionClosed") from None
                except TimeoutError:
                    conn.close()
                    raise HttpFailure("ReadTimeout") from None
                except (
                    OSError,
                    asyncio.IncompleteReadError,
                    ValueError,
                    asyncio.LimitOverrunError,
                ) as exc:
                    conn.close()
                    raise HttpFailure(type(exc).__name__) from None
            raise HttpFailure("unreachable")
        finally:
            self._idle.put_nowait(conn)

    async def _exchange(self, conn: _Conn, message: bytes) -> tuple[int, Any]:
        if conn.writer is None:
            conn.reader, conn.writer = await asyncio.open_connection(self.host, self.port)
        assert conn.reader is not None
        try:
            conn.writer.write(message)
            await conn.writer.drain()
            head = await conn.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _Stale() from None
            raise
        except (ConnectionResetError, BrokenPipeError):
            # Reset before a byte of the answer: the server had closed the idle
            # connection, so it never read this request.
            raise _Stale() from None
        conn.used = True
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length = -1
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
            elif name == b"transfer-encoding":
                raise ValueError("chunked replies are not expected from paylive")
        if length < 0 or length > MAX_RESPONSE_BYTES:
            raise ValueError(f"unusable Content-Length {length}")
        raw = await conn.reader.readexactly(length)
        if close:
            conn.close()
        return status, _decode(raw)

    async def aclose(self) -> None:
        for conn in self._conns:
            conn.close()


class _Stale(Exception):
    """The connection ended before a single byte of the answer."""


class HttpxPool:
    def __init__(self, base_url: str, size: int) -> None:
        self.size = max(1, size)
        self._clients = [
            httpx.AsyncClient(
                base_url=base_url,
                limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                timeout=httpx.Timeout(REQUEST_TIMEOUT_S),
            )
            for _ in range(self.size)
        ]
        self._idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for client in self._clients:
            self._idle.put_nowait(client)

    async def request(
        self, method: str, path: str, json_body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        client = await self._idle.get()
        try:
            reply = await client.request(method, path, json=json_body, headers=headers)
        except httpx.HTTPError as exc:
            raise HttpFailure(type(exc).__name__) from None
        finally:
            self._idle.put_nowait(client)
        return reply.status_code, _decode(reply.content)

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()


async def warm(pool: Pool, path: str, headers: dict[str, str] | None = None) -> None:
    """``GET path`` on every connection of ``pool`` at once (set-up, not measured).

    A pool that sat idle longer than the server's keep-alive (while ``paylive load``
    opened its sockets) holds connections the server has closed; the drive's first
    requests would then all go on new connections in the same instant (768 in a
    bench run), a burst of connects that steady traffic does not have. Each request
    here takes a connection of its own, and a closed one is made again.
    """

    async def one() -> None:
        with contextlib.suppress(HttpFailure):
            await pool.request("GET", path, None, headers)

    await asyncio.gather(*(one() for _ in range(pool.size)))


def make_pool(kind: str, base_url: str, size: int) -> Pool:
    if kind == "httpx":
        return HttpxPool(base_url, size)
    return RawPool(base_url, size)
