"""uvicorn, made to close sockets with 1001 on shutdown, for one worker or several.

uvicorn closes open WebSockets with 1012 when it stops; PROTOCOL.md promises 1001.
``PayliveServer`` runs the shutdown hooks (which close every socket with 1001) before
handing over to uvicorn. With ``--workers``, uvicorn's supervisor builds a plain
``Server`` in each child, so the child process class is swapped for one that builds
ours.
"""

from __future__ import annotations

import asyncio
import socket

import uvicorn
from uvicorn.supervisors import multiprocess

from . import shutdown


class PayliveServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        shutdown.run_hooks()
        await asyncio.sleep(0.2)  # let the close frames go out before uvicorn's own
        await super().shutdown(sockets=sockets)


class PayliveProcess(multiprocess.Process):
    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = PayliveServer(config=self.config)
        return self._server


def run(config: uvicorn.Config) -> None:
    """Serve ``config`` until a signal stops it."""
    if config.workers <= 1:
        PayliveServer(config).run()
        return
    # The supervisor names its child class as a module global; the children unpickle
    # ours by reference, so this only has to hold in this (the parent) process.
    multiprocess.Process = PayliveProcess  # type: ignore[misc]
    sock = config.bind_socket()
    multiprocess.Multiprocess(config, sockets=[sock]).run()
