"""A small HTTP proxy on a free loopback port that can lose answers, for the provider
tests: put it between paylive and a provider server (``PAYLIVE_STRIPE_API_BASE``) and
the provider stays real while the network between them misbehaves on cue.

It runs its own event loop in a thread so that synchronous and async tests alike can
steer it. Each request is forwarded on a fresh upstream connection and each client
connection carries one request (``Connection: close``), which keeps the parsing to a
request head, a ``Content-Length`` body and an answer read to its end.

As Stripe does, it holds an ``Idempotency-Key`` while the provider works on the request
made under it: another request under that key meanwhile is answered 409
``idempotency_key_in_use`` and never forwarded (localstripe has no such rule).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .ports import free_port

IO_TIMEOUT_S = 10.0


@dataclass
class _Fake:
    method: str
    path: re.Pattern[str]
    status: int
    body: Callable[[re.Match[str]], dict[str, Any]]


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self._upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # (method, path, Idempotency-Key or None) of every request, in order.
        self.seen: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()
        self._cut_after: tuple[str, re.Pattern[str], str | None] | None = None
        self._cut = False
        self._lost: tuple[str, re.Pattern[str]] | None = None
        self._fakes: list[_Fake] = []
        self._slow: tuple[str, re.Pattern[str], float] | None = None
        # Idempotency-Keys whose request the provider is working on, and the requests
        # answered 409 because theirs was (method, path, key).
        self._working: set[str] = set()
        self.in_use: list[tuple[str, str, str]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    def start(self) -> FaultProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port), self._loop
        )
        self._server = future.result(IO_TIMEOUT_S)
        return self

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._open):
                writer.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(IO_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(IO_TIMEOUT_S)
        self._loop.close()

    # Faults ------------------------------------------------------------------------

    def cut_after(self, method: str, pattern: str, key: str | None = None) -> None:
        """The next request matching (and, with ``key``, made under that Idempotency-Key)
        is forwarded and its answer lost; from then on no request gets through (the
        provider is unreachable) until ``restore``. The key keeps an earlier test's
        effect, retried by the outbox, from being the request that cuts."""
        with self._lock:
            self._cut_after = (method, re.compile(pattern), key)

    def fake(
        self, method: str, pattern: str, status: int, body: Callable[[re.Match[str]], dict]
    ) -> None:
        """Answer matching requests with ``body(match)`` and never forward them."""
        with self._lock:
            self._fakes.append(_Fake(method, re.compile(pattern), status, body))

    def slow(self, method: str, pattern: str, seconds: float) -> None:
        """Matching requests reach the provider ``seconds`` late (a provider slow to do
        them), whether or not the client still waits: it does them all the same."""
        with self._lock:
            self._slow = (method, re.compile(pattern), seconds)

    def restore(self, still_lost: tuple[str, str] | None = None) -> None:
        """The provider is reachable again, except (``still_lost``, a method and a path
        pattern) for requests that keep getting no answer."""
        with self._lock:
            self._cut_after, self._cut, self._fakes = None, False, []
            self._slow = None
            self._lost = None if still_lost is None else (still_lost[0], re.compile(still_lost[1]))

    @property
    def cut(self) -> bool:
        return self._cut

    # The proxy ---------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            length = 0
            key = None
            headers = []
            for line in lines[1:]:
                if not line:
                    continue
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
                if name.strip().lower() == "idempotency-key":
                    key = value.strip()
                if name.strip().lower() not in ("connection", "keep-alive"):
                    headers.append(line)
            body = await asyncio.wait_for(reader.readexactly(length), IO_TIMEOUT_S)
            path = urlsplit(target).path
            with self._lock:
                self.seen.append((method, path, key))
                lost = self._lost is not None and (
                    self._lost[0] == method and self._lost[1].search(path)
                )
                if self._cut or lost:
                    return  # unreachable: the connection closes with no answer
                fake = next(
                    (f for f in self._fakes if f.method == method and f.path.search(path)), None
                )
                lose = self._cut_after is not None and (
                    self._cut_after[0] == method
                    and self._cut_after[1].search(path) is not None
                    and self._cut_after[2] in (None, key)
                )
                if lose:
                    self._cut = True
                busy = fake is None and key is not None and key in self._working
                if busy:
                    assert key is not None
                    self.in_use.append((method, path, key))
                elif fake is None and key is not None:
                    self._working.add(key)
                slow = self._slow
                delay = (
                    slow[2]
                    if slow is not None and slow[0] == method and slow[1].search(path)
                    else 0
                )
            if busy:
                payload = json.dumps(
                    {
                        "error": {
                            "type": "idempotency_error",
                            "code": "idempotency_key_in_use",
                            "message": "There is currently another in-progress request"
                            " using this Idempotent Key.",
                        }
                    }
                ).encode()
                writer.write(
                    b"HTTP/1.1 409 Conflict\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(payload), payload)
                )
                await writer.drain()
                return
            if fake is not None:
                match = fake.path.search(path)
                assert match is not None
                payload = json.dumps(fake.body(match)).encode()
                writer.write(
                    b"HTTP/1.1 %d Faked\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                    % (fake.status, len(payload), payload)
                )
                await writer.drain()
                return
            try:
                await asyncio.sleep(delay)
                answer = await self._forward(method, target, headers, body)
            finally:
                with self._lock:
                    if key is not None:
                        self._working.discard(key)
            if not lose:
                writer.write(answer)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    async def _forward(self, method: str, target: str, headers: list[str], body: bytes) -> bytes:
        up_reader, up_writer = await asyncio.wait_for(
            asyncio.open_connection(*self._upstream), IO_TIMEOUT_S
        )
        try:
            head = "\r\n".join([f"{method} {target} HTTP/1.1", *headers, "Connection: close"])
            up_writer.write(head.encode("latin-1") + b"\r\n\r\n" + body)
            await up_writer.drain()
            answer = await asyncio.wait_for(up_reader.read(), IO_TIMEOUT_S)
        finally:
            up_writer.close()
        # One request per client connection: say so, whatever the upstream said.
        top, sep, rest = answer.partition(b"\r\n\r\n")
        kept = [h for h in top.split(b"\r\n") if not h.lower().startswith(b"connection:")]
        return b"\r\n".join([*kept, b"Connection: close"]) + sep + rest
