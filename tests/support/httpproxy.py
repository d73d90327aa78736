"""An HTTP/1.1 reverse proxy, run as its own process, that behaves like the middleboxes
paylive's fallback transports are for (protocol 4.2):

- ``--refuse-upgrade``: every WebSocket ``Upgrade`` is answered 403 (as some corporate
  proxies, antivirus and hotel networks do); everything else passes;
- ``--buffer``: a response reaches the client only once it has ended (a proxy that
  buffers streamed responses), so an event stream delivers nothing;
- ``--hold-sockets``: a WebSocket handshake passes, and then nothing the server sends
  on the socket reaches the client (a middlebox that holds the frames); the client's
  frames still reach the server;
- requests go round-robin over the ``--upstream`` ports, one upstream connection per
  request, so consecutive requests of one page land on different workers;
- ``--log``: one access-log line per request, the request line as the client sent it
  (nothing redacted), for the tests to read.

    python -m tests.support.httpproxy --port 8080 --upstream 8001,8002 --refuse-upgrade --log access.log
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO

MAX_HEAD = 64 * 1024
HEAD_TIMEOUT_S = 30.0


class Proxy:
    def __init__(
        self,
        upstreams: list[int],
        refuse_upgrade: bool,
        buffer: bool,
        log: IO[str] | None,
        hold_sockets: bool = False,
    ) -> None:
        self._next = itertools.cycle(upstreams)
        self.refuse_upgrade = refuse_upgrade
        self.buffer = buffer
        self.hold_sockets = hold_sockets
        self.log = log

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; True when the client connection may carry another."""
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        except asyncio.IncompleteReadError:
            return False
        if len(head) > MAX_HEAD:
            return False
        lines = head.decode("latin-1").split("\r\n")
        request_line, header_lines = lines[0], [h for h in lines[1:] if h]
        headers = [
            (name.strip(), value.strip())
            for name, _, value in (h.partition(":") for h in header_lines)
        ]
        lowered = {name.lower(): value for name, value in headers}
        upgrade = lowered.get("upgrade", "").lower() == "websocket"
        self._log(request_line, upgrade)
        if upgrade and self.refuse_upgrade:
            writer.write(
                b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 27\r\n"
                b"Connection: close\r\n\r\nWebSockets are not allowed\n"
            )
            await writer.drain()
            return False
        length = int(lowered.get("content-length", "0") or 0)
        body = await reader.readexactly(length) if length else b""
        port = next(self._next)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            if upgrade:
                # A socket passes whole, both ways, for as long as it lives.
                up_writer.write(head + body)
                await up_writer.drain()
                if self.hold_sockets:
                    await _pipe_handshake_only(reader, writer, up_reader, up_writer)
                else:
                    await _pipe_both(reader, writer, up_reader, up_writer)
                return False
            kept = [(n, v) for n, v in headers if n.lower() not in ("connection", "keep-alive")]
            out = request_line + "\r\n" + "".join(f"{n}: {v}\r\n" for n, v in kept)
            out += "Connection: close\r\n\r\n"
            up_writer.write(out.encode("latin-1") + body)
            await up_writer.drain()
            if self.buffer:
                # Nothing reaches the client before the response has ended.
                response = await _until_closed_or_client_gone(up_reader, reader)
                if response is None:
                    return False
                writer.write(response)
                await writer.drain()
            else:
                while chunk := await up_reader.read(65536):
                    writer.write(chunk)
                    await writer.drain()
            # The upstream said Connection: close; so does this side.
            return False
        finally:
            up_writer.close()
            with contextlib.suppress(Exception):
                await up_writer.wait_closed()

    def _log(self, request_line: str, upgrade: bool) -> None:
        if self.log is not None:
            stamp = time.strftime("%H:%M:%S")
            self.log.write(f"{stamp} {request_line}{' [upgrade]' if upgrade else ''}\n")
            self.log.flush()


async def _until_closed_or_client_gone(
    upstream: asyncio.StreamReader, client: asyncio.StreamReader
) -> bytes | None:
    """The whole upstream response, or None when the client left first."""
    whole = asyncio.ensure_future(upstream.read(-1))
    gone = asyncio.ensure_future(client.read(1))
    done, _ = await asyncio.wait({whole, gone}, return_when=asyncio.FIRST_COMPLETED)
    if whole in done:
        gone.cancel()
        return whole.result()
    whole.cancel()
    return None


async def _pipe_both(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()
        with contextlib.suppress(Exception):
            dst.close()

    await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def _pipe_handshake_only(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    up_reader: asyncio.StreamReader,
    up_writer: asyncio.StreamWriter,
) -> None:
    """The client's frames go up; of the server's side, only the handshake's answer
    comes down, and the rest is held for as long as the socket lives."""

    async def up() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                up_writer.write(chunk)
                await up_writer.drain()
        with contextlib.suppress(Exception):
            up_writer.close()

    async def down() -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            writer.write(await up_reader.readuntil(b"\r\n\r\n"))
            await writer.drain()
            while await up_reader.read(65536):
                pass

    await asyncio.gather(up(), down())


async def serve(port: int, proxy: Proxy) -> None:
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", port, limit=MAX_HEAD)
    async with server:
        await server.serve_forever()


class HttpProxy:
    """The proxy as a subprocess in front of ``upstreams`` (ports), on a free port."""

    def __init__(
        self,
        upstreams: list[int],
        *,
        refuse_upgrade: bool = True,
        buffer: bool = False,
        hold_sockets: bool = False,
    ) -> None:
        from .ports import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._dir = tempfile.TemporaryDirectory(prefix="paylive-proxy-")
        self.log_path = Path(self._dir.name) / "access.log"
        args = [sys.executable, "-m", "tests.support.httpproxy", "--port", str(self.port)]
        args += ["--upstream", ",".join(str(p) for p in upstreams), "--log", str(self.log_path)]
        if refuse_upgrade:
            args.append("--refuse-upgrade")
        if buffer:
            args.append("--buffer")
        if hold_sockets:
            args.append("--hold-sockets")
        self._args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> HttpProxy:
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(self._args, cwd=root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return self
            if self.proc.poll() is not None:
                raise RuntimeError("the proxy exited early")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the proxy did not listen within {timeout} s")

    def access_log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def stop(self) -> None:
        from .processes import stop as stop_process

        stop_process(self.proc)

    def __enter__(self) -> HttpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._dir.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="comma-separated ports")
    parser.add_argument("--refuse-upgrade", action="store_true")
    parser.add_argument("--buffer", action="store_true")
    parser.add_argument("--hold-sockets", action="store_true")
    parser.add_argument("--log")
    args = parser.parse_args()
    upstreams = [int(p) for p in args.upstream.split(",") if p]
    log = open(args.log, "a") if args.log else None  # noqa: SIM115 (open for the process's life)
    proxy = Proxy(upstreams, args.refuse_upgrade, args.buffer, log, args.hold_sockets)
    asyncio.run(serve(args.port, proxy))


if __name__ == "__main__":
    main()
