"""The driver: creates the sessions, then fires state changes open loop at their scheduled times.

Every loop is bounded: the drive fires at most ``rate * duration`` commands,
replacements are capped, and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any

from ..core.protocol import TERMINAL_STATUSES
from .accounting import Tally, cpu_seconds
from .config import Config
from .dialect import Api
from .http import HttpFailure, Pool, warm
from .records import Customer, Roster, Tracked
from .sockets import Watchers, now_ms

MAX_STRIKES = 3  # consecutive failed commands (not 503s) before a session is given up
HTTP_SETUP_CONCURRENCY = 32  # session creation and the final reads
CREATE_TRIES = 10  # a session creation refused with 503 is sent again, this many times at most
SETTLE_TIMEOUT_S = 15.0  # in-flight commands and retirements after the drive
TICK_S = 0.01  # the generator's loop-lag probe
HOPELESS_S = 1.0  # past the drive's end by this much, what is left is not sent


class Driver:
    def __init__(
        self, conf: Config, api: Api, http: Pool, roster: Roster, tally: Tally, watchers: Watchers
    ) -> None:
        self.conf = conf
        self.api = api
        self.http = http
        self.roster = roster
        self.tally = tally
        self.counts = tally.changes
        self.watchers = watchers
        self.inflight: set[asyncio.Task[None]] = set()
        self.background: set[asyncio.Task[None]] = set()

    # Sessions --------------------------------------------------------------------------

    async def create_session(self) -> Tracked | None:
        path, body = self.api.create(len(self.roster.sessions))
        for attempt in range(CREATE_TRIES):
            try:
                status, data = await self.http.request("POST", path, body, self.api.headers)
            except HttpFailure as exc:
                self.tally.create_errors[exc.kind] += 1
                return None
            if status != 503 or attempt + 1 == CREATE_TRIES:
                break
            # Refused (overloaded or Redis busy): set-up is not measured, so wait and
            # try again rather than start the drive with fewer sessions than asked.
            await asyncio.sleep(0.1 * (attempt + 1))
        if status not in (200, 201):
            self.tally.create_errors[str(status)] += 1
            return None
        session = Tracked(data)
        if self.conf.mode == "poll":
            # The page showed the new session when it loaded: seq 0 is seen, and
            # every later state has to be caught by a poll.
            session.base = session.last = 0
            session.seen.add(0)
            session.observed = True
        self.roster.add(session)
        return session

    async def create_all(self) -> None:
        slots = asyncio.Semaphore(HTTP_SETUP_CONCURRENCY)

        async def one() -> None:
            async with slots:
                session = await self.create_session()
            if session is not None:
                self.roster.customers.append(Customer(session))

        await asyncio.gather(*(one() for _ in range(self.conf.sockets)))

    async def warm(self) -> None:
        """Every connection of the pool made live just before the drive (``warm``)."""
        if self.roster.sessions:
            await warm(self.http, self.api.read(self.roster.sessions[0]), self.api.headers)

    # The drive ----------------------------------------------------------------------------

    async def drive(self, start_wall: float) -> None:
        """Fire ``rate * duration`` commands at their scheduled times (open loop)."""
        loop = asyncio.get_running_loop()
        t0 = loop.time() + (start_wall - time.time())
        if t0 > loop.time():
            await asyncio.sleep(t0 - loop.time())
        cpu0 = cpu_seconds()
        self.roster.driving = True
        ticker = asyncio.ensure_future(self.tick())
        counts = self.counts
        total = int(round(self.conf.rate * self.conf.duration))
        counts.scheduled = total
        interval = 1.0 / self.conf.rate if self.conf.rate > 0 else 0.0
        k = 0
        end = t0 + self.conf.duration
        while k < total:
            now = loop.time()
            if now > end + HOPELESS_S:
                # Hopelessly behind (a starved process): what is left is not sent.
                counts.skipped_busy += total - k
                break
            due = t0 + k * interval
            if due > now:
                await asyncio.sleep(due - now)
                continue
            # Everything due by now goes out now: a late loop catches up rather
            # than slowing the schedule down (that would hide the server's delay).
            while k < total and t0 + k * interval <= now:
                lag = now - (t0 + k * interval)
                counts.max_lag_s = max(counts.max_lag_s, lag)
                if lag > 0.1:
                    counts.late += 1
                self.fire()
                k += 1
        if end > loop.time():
            await asyncio.sleep(end - loop.time())
        self.roster.driving = False
        ticker.cancel()
        cpu1 = cpu_seconds()
        self.tally.drive_cpu = (cpu1[0] - cpu0[0], cpu1[1] - cpu0[1])

    async def tick(self) -> None:
        """This process's own loop lag while it drives: how late a 10 ms timer runs.
        Every time it takes (an answer, a 503) is taken by this loop, so a late loop
        here reads as a slow server unless it is reported apart."""
        loop = asyncio.get_running_loop()
        lags = self.counts.loop_lag_ms
        while self.roster.driving:
            before = loop.time()
            await asyncio.sleep(TICK_S)
            lags.append((loop.time() - before - TICK_S) * 1000)

    def fire(self) -> None:
        if len(self.inflight) >= self.conf.concurrency:
            self.counts.skipped_busy += 1
            return
        session = self.pick()
        if session is None:
            self.counts.skipped_idle += 1
            return
        self.spawn(self.command(session), self.inflight)
        self.counts.peak_inflight = max(self.counts.peak_inflight, len(self.inflight))

    def pick(self) -> Tracked | None:
        """The next idle session whose next command is allowed now (round robin)."""
        ready = self.roster.ready
        now = now_ms()
        for _ in range(min(len(ready), 16)):
            session = ready.popleft()
            if session.status == "interrupted" and session.retry_at and session.retry_at > now:
                ready.append(session)
                continue
            return session
        return None

    async def command(self, session: Tracked) -> None:
        request = self.api.change(session)
        if request is None:
            self.after(session)
            return
        path, body = request
        counts = self.counts
        counts.sent += 1
        started = time.perf_counter()
        try:
            status, data = await self.http.request("POST", path, body, self.api.headers)
        except HttpFailure as exc:
            counts.errors[exc.kind] += 1
            session.strikes += 1
            self.after(session)
            return
        took = (time.perf_counter() - started) * 1000
        counts.http_ms.append(took)
        if status == 503:
            counts.refused_ms.append(took)  # how fast overload is refused
        if status in (200, 202):
            counts.ok += 1
            session.strikes = 0
            session.apply(data)
        elif status == 409:
            error = data.get("error") or {}
            counts.conflicts[str(error.get("code"))] += 1
            session.strikes += 1
            if isinstance(data.get("session"), dict):
                session.apply(data["session"])
        else:
            counts.errors[str(status)] += 1
            # A 503 says "retry shortly", and a customer told so pays again for the
            # same checkout: the session goes back in the round robin (about a second
            # at these rates, as Retry-After asks) rather than being given up for a
            # fresh session and socket, which would load the server with set-up work
            # that only overload made.
            if status != 503:
                session.strikes += 1
        self.after(session)

    def after(self, session: Tracked) -> None:
        if session.status in TERMINAL_STATUSES or session.strikes >= MAX_STRIKES:
            self.spawn(self.retire(session), self.background)
        else:
            self.roster.ready.append(session)

    async def retire(self, session: Tracked) -> None:
        """A finished session makes way for a fresh one on the same customer."""
        session.retired = True
        customer = self.roster.owner.get(session.id)
        if customer is None:
            return
        await self.watchers.retire(customer, session)
        if not self.roster.driving or self.tally.sockets.replaced >= self.conf.max_replacements:
            return
        fresh = await self.create_session()
        if fresh is None:
            return
        self.tally.sockets.replaced += 1
        self.roster.owner[fresh.id] = customer
        if await self.watchers.adopt(customer, fresh):
            self.roster.ready.append(fresh)

    def spawn(self, coro: Coroutine[Any, Any, None], into: set[asyncio.Task[None]]) -> None:
        task = asyncio.ensure_future(coro)
        into.add(task)
        task.add_done_callback(into.discard)

    # After the drive ------------------------------------------------------------------------

    async def settle(self) -> None:
        """Wait (bounded) for the commands in flight and the retirements."""
        if self.inflight:
            await asyncio.wait(set(self.inflight), timeout=SETTLE_TIMEOUT_S)
        if self.background:
            await asyncio.wait(set(self.background), timeout=SETTLE_TIMEOUT_S)

    async def fetch_finals(self) -> None:
        """The server's own seq for every session: the number of events it sent."""
        slots = asyncio.Semaphore(HTTP_SETUP_CONCURRENCY)
        errors = self.counts.errors

        async def one(session: Tracked) -> None:
            async with slots:
                try:
                    status, data = await self.http.request(
                        "GET", self.api.read(session), None, self.api.headers
                    )
                except HttpFailure as exc:
                    errors[f"final_{exc.kind}"] += 1
                    return
            if status == 200:
                session.final = int(data["seq"])
            else:
                errors[f"final_{status}"] += 1

        await asyncio.gather(*(one(s) for s in self.roster.sessions if s.observed))
