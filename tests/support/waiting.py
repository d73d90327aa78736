"""Bounded waits for conditions that become true on their own (a webhook, a flush, a
server closing a socket)."""

from __future__ import annotations

import inspect
import socket
import time
from collections.abc import Callable
from typing import Any

import anyio


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` (plain or async) until it returns something true; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        await anyio.sleep(0.05)


def closed_by_server(sock: socket.socket, deadline: float) -> bytes | None:
    """What the server sent before closing ``sock`` (EOF or reset) by ``deadline``
    (monotonic seconds); None when it was still open then."""
    received = b""
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            sock.settimeout(left)
            data = sock.recv(65536)
            if not data:
                return received
            received += data
    except (ConnectionResetError, BrokenPipeError):
        return received
    except TimeoutError:
        return None


def healthz_on(sock: socket.socket) -> bytes:
    """``GET /healthz`` on ``sock``, left open (kept alive), and the whole answer read:
    a connection that has served a request, for what a test does with the next."""
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b"}"):  # the body may come in a segment of its own
        chunk = sock.recv(65536)
        assert chunk, f"closed after {answer!r}"
        answer += chunk
    return answer


def exchange(port: int, request: bytes, wait_s: float = 2.0) -> bytes:
    """Send ``request`` on a fresh connection to ``port``; all that comes back until the
    server closes it or ``wait_s`` passes (for requests an HTTP client would refuse to
    send)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=wait_s)
    try:
        sock.sendall(request)
        return read_to_close(sock, time.monotonic() + wait_s)
    finally:
        sock.close()


def read_to_close(sock: socket.socket, deadline: float = float("inf")) -> bytes:
    """All ``sock`` receives until the peer closes it, resets it, its own timeout
    passes with nothing, or ``deadline`` (``time.monotonic``) is past."""
    received = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        received += chunk
    return received
