"""One process of ``paylive load``: its share of sessions, sockets and state changes.

The parent starts it as ``python -m paylive.load.worker``. It reads its ``Config``,
then one command per phase, as JSON lines on stdin, and answers each phase on
stdout, so that the parent can sample the server between phases (after the sessions
exist, after the sockets are open, after the drive). EOF on stdin means the parent
is gone: the process stops.

The process is assembled from small pieces: a ``Roster`` of sessions, a ``Tally`` of
counters, the ``Driver``, the customers' ``SocketFleet`` (or the ``Pollers``), the
``AdminFeeds``. What speaks to the server is a ``Target`` (an ``Api`` and a
``Dialect``); ``main`` takes another target to measure another server the same way.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .accounting import Tally, worker_result
from .admin import AdminFeeds
from .config import Config
from .dialect import Api, Dialect, PayliveApi, PayliveDialect
from .driver import HTTP_SETUP_CONCURRENCY, SETTLE_TIMEOUT_S, Driver
from .http import Pool, make_pool
from .poll import Pollers
from .procstat import raise_nofile
from .records import Roster
from .sockets import SocketFleet


@dataclass(frozen=True)
class Target:
    """What speaks to the server under load."""

    api: Api
    dialect: Dialect


TargetFactory = Callable[[Config], Target]


def paylive_target(conf: Config) -> Target:
    return Target(PayliveApi(conf), PayliveDialect(conf))


class Worker:
    """The pieces of one process, wired together; one method per phase."""

    def __init__(self, conf: Config, target: Target, http: Pool, poll_http: Pool) -> None:
        self.conf = conf
        self.tally = Tally(open_files=raise_nofile())
        self.roster = Roster()
        self.feeds = AdminFeeds(target.dialect, self.tally)
        self.fleet = SocketFleet(target.dialect, self.roster, self.tally)
        self.pollers = (
            Pollers(conf, target.api, poll_http, self.roster, self.tally)
            if conf.mode == "poll"
            else None
        )
        self.driver = Driver(
            conf, target.api, http, self.roster, self.tally, self.pollers or self.fleet
        )

    async def admins(self) -> dict[str, Any]:
        await self.feeds.open(self.conf.admins)
        return {"opened": len(self.feeds.feeds)}

    async def create(self) -> dict[str, Any]:
        await self.driver.create_all()
        return {"created": len(self.roster.customers), "errors": dict(self.tally.create_errors)}

    async def open(self) -> dict[str, Any]:
        if self.pollers is None:
            await self.fleet.open_all()
        await self.driver.warm()
        counts = self.tally.sockets
        return {"opened": counts.opened["initial"], "failures": dict(counts.open_failed)}

    async def drive(self, start: float) -> asyncio.Future[Any] | None:
        """Drive; the pollers' task (poll mode), still running until one interval after."""
        pollers = None
        if self.pollers is not None:
            pollers = asyncio.ensure_future(self.pollers.run(start))
            self.roster.ready.extend(c.session for c in self.roster.customers)
        await self.driver.drive(start)
        return pollers

    async def finish(self, pollers: asyncio.Future[Any] | None) -> dict[str, Any]:
        """Settle, read the server's finals, drain the sockets, close: the result."""
        await self.driver.settle()
        if pollers is not None:
            await asyncio.wait([pollers], timeout=self.conf.poll_interval + SETTLE_TIMEOUT_S)
            pollers.cancel()
        await self.driver.fetch_finals()
        if self.pollers is None:
            await self.fleet.drain(self.conf.drain)
        await self.close_all()
        return worker_result(
            self.conf, self.tally, self.roster.sessions, self.roster.customers, self.feeds.records
        )

    async def close_all(self) -> None:
        await self.fleet.close_all()
        await self.feeds.close_all()


# The control loop: one JSON line per phase ------------------------------------------------------


def emit(phase: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"phase": phase, **fields}, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def next_command() -> dict[str, Any]:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        return {"cmd": "abort"}
    return json.loads(line)  # type: ignore[no-any-return]


async def run_phases(worker: Worker) -> None:
    emit("ready", open_files=worker.tally.open_files)
    phases = {"admins": worker.admins, "create": worker.create, "open": worker.open}
    while True:
        command = await next_command()
        name = str(command.get("cmd"))
        started = time.perf_counter()
        if name in phases:
            emit(name, **await phases[name]())
        elif name == "go":
            pollers = await worker.drive(float(command["start"]))
            emit("drove")
            result = await worker.finish(pollers)
            result["phase_ms"]["go"] = round((time.perf_counter() - started) * 1000, 1)
            emit("done", result=result)
            return
        else:  # "abort", or EOF: the parent is gone
            return
        worker.tally.phase_ms[name] = round((time.perf_counter() - started) * 1000, 1)


async def serve(conf: Config, make_target: TargetFactory) -> None:
    http = make_pool(conf.http_client, conf.base_url, max(conf.concurrency, HTTP_SETUP_CONCURRENCY))
    poll_http = make_pool(
        conf.http_client, conf.base_url, conf.poll_connections if conf.mode == "poll" else 1
    )
    worker = Worker(conf, make_target(conf), http, poll_http)
    try:
        await run_phases(worker)
    finally:
        await worker.close_all()
        await http.aclose()
        await poll_http.aclose()


def main(make_target: TargetFactory = paylive_target) -> int:
    line = sys.stdin.readline()
    if not line:
        return 1
    asyncio.run(serve(Config.from_json(line), make_target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
