"""uvicorn, made to drain its sockets on shutdown, for one worker or several.

uvicorn closes every open WebSocket at once with 1012 when it stops: a deploy sends
all of a worker's customers back in the same second. ``PayliveServer`` first stops
accepting connections (new ones go to the other workers, which share the listening
socket), then runs the shutdown hooks (the worker's drain: its sockets closed a slice
at a time over ``PAYLIVE_DRAIN_MS``, docs/protocol.md section 4.3), and only then
hands over to uvicorn, whose ``timeout_graceful_shutdown`` bounds the requests still
in flight. With ``--workers``, uvicorn's supervisor builds a plain ``Server`` in each
child, so the child process class is swapped for one that builds ours; the supervisor
starts a new child when one exits, so a worker sent SIGTERM is replaced after its drain.

A second signal cuts the drain short (docs/protocol.md section 4.3). uvicorn forces a
stop only on a second SIGINT, and its supervisor, once stopping, keeps what it is sent
to itself: a platform's second SIGTERM reached no drain, which ran its whole window.
A forced stop in uvicorn also skips the app's lifespan shutdown (``Server.shutdown``
sends it only ``if not self.force_exit``) and then re-raises the signal, which ends the
process at once: the runtime's loops and the effects they had started were cut
wherever they stood, and the gateway, webhook sender, archive and engine were never
closed, nor the trace exporter flushed. ``PayliveServer`` runs that shutdown itself
after a forced stop, bounded by ``FORCED_STOP_S``.

Requests in flight are waited for here, not by uvicorn, and ended before that shutdown
closes the engine and the clients. uvicorn, at the end of its grace, cancelled their
tasks and went on without waiting for them (a traceback and a 500 for each); on a
forced stop it did not even cancel them, and they ran on against a closed engine until
the process ended. Here each is cut (``BoundedHttpProtocol.cut``: 503 ``shutting_down``,
or its connection closed once its answer has begun) and waited for, with one log line.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.supervisors import multiprocess

from ..runtime import STOP_WAIT_S
from . import shutdown
from .accepting import Acceptor, accept_for
from .connections import BoundedHttpProtocol

log = logging.getLogger("paylive.server")

# Measured at 5,000 sockets and 1,000 changes/s: with CPython's default thresholds the
# collector walks every socket's objects often enough to add ~100 ms to p99 delivery;
# with these, p99 fell from 105-119 ms to 11 ms at the same CPU.
GC_THRESHOLDS = (20_000, 50, 100)
# A forced stop still gives the app's shutdown this long: the runtime's stop waits up
# to STOP_WAIT_S for its loops, then closes the provider, archive and engine clients,
# each bounded by its own timeout. A stop that hangs past it is left to the exit.
FORCED_STOP_S = STOP_WAIT_S + 2.0
# How long the requests cut at a stop get to end: unwinding a command is at most an
# engine call or two (an Idempotency-Key let go), each bounded by the engine's timeout.
CUT_WAIT_S = 2.0


def tune_gc() -> None:
    """Collect young objects less often, and never scan what start-up made (modules,
    the app): sockets are long-lived and full of objects the collector cannot free."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class PayliveServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.acceptors: list[Acceptor] = []
        self._terms = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._forced = asyncio.Event()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A second SIGTERM forces, as a second SIGINT does in uvicorn. Not a SIGTERM
        # after a SIGINT: Ctrl-C at a terminal signals a worker, then its supervisor
        # passes the same stop on as SIGTERM, and one Ctrl-C must still drain.
        if sig == signal.SIGTERM:
            self._terms += 1
            if self._terms > 1:
                self.force_exit = True
        super().handle_exit(sig, frame)
        if self.force_exit and self._loop is not None:
            # A signal handler runs between any two steps of the loop: only this call
            # may hand the loop work from it.
            self._loop.call_soon_threadsafe(self._forced.set)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets=sockets)
        # paylive serve has no TLS of its own (it ends at the proxy); a server given
        # uvicorn's would need it on the connections the acceptors take too.
        if self.started and self.config.ssl is None:
            # As uvicorn's own servers make each connection's protocol.
            config, loop = self.config, asyncio.get_running_loop()

            def protocol() -> asyncio.Protocol:
                made: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                    config=config,
                    server_state=self.server_state,
                    app_state=self.lifespan.state,
                    _loop=loop,
                )
                return made

            self.acceptors = accept_for(loop, self.servers, protocol)
        tune_gc()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Stop accepting first (uvicorn does it again, harmlessly): with several
        # workers on one listening socket, the kernel hands new connections to the others.
        for acceptor in self.acceptors:
            acceptor.stop()
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        await shutdown.run_hooks(lambda: self.force_exit)
        await asyncio.sleep(0.2)  # let the close frames go out before uvicorn's own
        await self._end_requests()
        await super().shutdown(sockets=sockets)
        if self.force_exit:
            await self._stop_app()

    async def _end_requests(self) -> None:
        """Wait for the requests in flight, up to the grace or a forced stop; then cut
        those left and wait for their tasks, so that none runs on once the app's
        shutdown closes the engine (uvicorn then finds no task to cancel)."""
        tasks = self.server_state.tasks
        # Answered requests close their connections, idle kept-alive ones close now
        # (uvicorn asks the same again, harmlessly).
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        grace = self.config.timeout_graceful_shutdown
        deadline = None if grace is None else loop.time() + grace
        if tasks and not self.force_exit:
            log.info("waiting up to %s s for %d requests in flight", grace, len(tasks))
        forced = asyncio.ensure_future(self._forced.wait())
        try:
            while tasks and not self.force_exit:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    break
                await asyncio.wait(
                    [*tasks, forced], timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            forced.cancel()
        cut = [
            task
            for connection in list(self.server_state.connections)
            if isinstance(connection, BoundedHttpProtocol) and (task := connection.cut())
        ]
        if cut:
            log.warning(
                "cut %d requests in flight at %s: each answered 503 shutting_down, or its "
                "connection closed when its answer had begun",
                len(cut),
                "a forced stop" if self.force_exit else "the end of the grace",
            )
        if tasks:
            _, late = await asyncio.wait(set(tasks), timeout=CUT_WAIT_S)
            if late:
                # Not ours to cut (a socket's handler), or deaf to its cut: uvicorn's
                # way, a cancel without waiting, and its traceback for each.
                log.error("%d tasks still running after the cut; cancelled", len(late))
                for task in late:
                    task.cancel()

    async def _stop_app(self) -> None:
        """The app's lifespan shutdown, which uvicorn skips on a forced stop; unless it
        ran already (the second signal came while uvicorn was running it)."""
        done = getattr(self.lifespan, "shutdown_event", None)
        if done is not None and done.is_set():
            return
        try:
            async with asyncio.timeout(FORCED_STOP_S):
                await self.lifespan.shutdown()
        except TimeoutError:
            log.error("the app's shutdown did not end within %s s of a forced stop", FORCED_STOP_S)


class PayliveProcess(multiprocess.Process):
    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = PayliveServer(config=self.config)
        return self._server


class PayliveSupervisor(multiprocess.Multiprocess):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn queues a stop signal for its loop, which reads the queue every half
        # second and never again once it is stopping: a second signal sent before the
        # first was passed on was lost, and the workers drained their whole window.
        # The first is queued as uvicorn does; any later one goes to the workers now.
        self._stops = 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_stop)

    def _on_stop(self, sig: int, frame: FrameType | None) -> None:
        self._stops += 1
        if self._stops == 1:
            self.signal_queue.append(sig)
        else:
            self._forward(sig, frame)

    def _forward(self, sig: int, frame: FrameType | None) -> None:
        for process in self.processes:
            # Not yet joined, so its pid is still its own (a zombie keeps it).
            pid = process.pid
            if pid is not None and process.exitcode is None:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass

    def join_all(self) -> None:
        """Wait for the workers to drain; a signal meanwhile is passed on to them (their
        second: the rest of their sockets closed at once)."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._forward)
        super().join_all()


def run(config: uvicorn.Config) -> None:
    """Serve ``config`` until a signal stops it."""
    if config.workers <= 1:
        PayliveServer(config).run()
        return
    # The supervisor names its child class as a module global; the children unpickle
    # ours by reference, so this only has to hold in this (the parent) process.
    multiprocess.Process = PayliveProcess  # type: ignore[misc]
    sock = config.bind_socket()
    PayliveSupervisor(config, sockets=[sock]).run()
