"""A TCP proxy on a free loopback port that a test can stop and start again, to make a
server unreachable and then reachable without touching the server itself.

Threads, not asyncio, so that it runs beside any event loop: one thread accepts,
two pump each connection. ``stop`` closes the listener and every connection (the
client sees resets, as when a database host goes away); ``start`` listens again on
the same port.

``lose_reply(*patterns)`` cuts the connection whose client sends a command holding
every one of ``patterns``: the command reaches the server whole, and its reply (with any other
reply on that connection from then on) never comes back, as when a network drops
between a write and its answer. With ``then_refuse`` the server is then unreachable
(every connection cut, new ones refused) until ``start``: the worker can do nothing
more after the write, as when the network or the server goes away right after it.
Proxies made with one ``Losses`` (one per node of a Redis Cluster) share what is to be
lost: the next such command on any of them, once.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from .ports import free_port

# How long the server has to run the command whose reply is lost, before the cut.
APPLY_S = 0.3


class Losses:
    """The replies still to lose, and how many were: one proxy's, or a group's."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.armed: list[tuple[tuple[bytes, ...], bool]] = []
        self.lost = 0

    def lose_reply(self, *patterns: bytes, then_refuse: bool = False) -> None:
        """Lose the reply to the next command holding all of ``patterns``."""
        assert patterns, "a reply to lose is chosen by at least one pattern"
        with self.lock:
            self.armed.append((patterns, then_refuse))

    def losing(self, chunk: bytes) -> tuple[bool, bool]:
        """Whether to lose this command's reply, and then refuse every connection."""
        with self.lock:
            for lose in self.armed:
                if all(pattern in chunk for pattern in lose[0]):
                    self.armed.remove(lose)
                    self.lost += 1
                    return True, lose[1]
        return False, False


class TcpProxy:
    def __init__(
        self, target_port: int, target_host: str = "127.0.0.1", losses: Losses | None = None
    ) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.losses = losses or Losses()

    @property
    def lost(self) -> int:
        return self.losses.lost

    def lose_reply(self, *patterns: bytes, then_refuse: bool = False) -> None:
        """Lose the reply to the next command holding all of ``patterns`` (see the
        docstring)."""
        self.losses.lose_reply(*patterns, then_refuse=then_refuse)

    def start(self) -> TcpProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            held, self._sockets = self._sockets, set()
        for sock in held:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # stopped
            try:
                upstream = socket.create_connection(self.target, timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._sockets |= {client, upstream}
            muted = threading.Event()
            for a, b, asks in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(a, b, asks, muted), daemon=True).start()

    def _pump(
        self, source: socket.socket, sink: socket.socket, asks: bool, muted: threading.Event
    ) -> None:
        try:
            while chunk := source.recv(65536):
                if not asks:
                    if not muted.is_set():
                        sink.sendall(chunk)
                    continue
                losing, refuse = self.losses.losing(chunk)
                if losing:
                    # Replies from now on are dropped; the command goes through whole,
                    # and the client is cut once the server has surely run it.
                    muted.set()
                    sink.sendall(chunk)
                    time.sleep(APPLY_S)
                    if refuse:
                        self.stop()
                    break
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                self._sockets -= {source, sink}
