"""The polling baseline: each page GETs its session every ``poll_interval``, as the older
design this server replaces did."""

from __future__ import annotations

import asyncio
import time

from .accounting import Tally
from .config import Config
from .dialect import Api
from .http import HttpFailure, Pool
from .records import Customer, Roster, Tracked
from .sockets import now_ms


class Pollers:
    def __init__(self, conf: Config, api: Api, http: Pool, roster: Roster, tally: Tally) -> None:
        self.conf = conf
        self.api = api
        self.http = http
        self.roster = roster
        self.counts = tally.poll

    async def poll_client(self, customer: Customer, first_at: float, stop_at: float) -> None:
        loop = asyncio.get_running_loop()
        interval = self.conf.poll_interval
        next_at = first_at
        while next_at < stop_at:
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            session = customer.session
            await self.poll_once(session)
            if session.retired and customer.next_session is not None:
                customer.session, customer.next_session = customer.next_session, None
                if self.roster.driving:
                    self.roster.ready.append(customer.session)
            next_at += interval
            # A poller that fell behind skips the rounds it missed, like a page
            # that polls again only after its last answer.
            while next_at < loop.time() and next_at < stop_at:
                next_at += interval
                self.counts.skipped += 1

    async def poll_once(self, session: Tracked) -> None:
        self.counts.polls += 1
        try:
            # The page's own credential: a customer GET, as the old checkout polled.
            status, body = await self.http.request(
                "GET", self.api.read(session), None, {"Authorization": f"Bearer {session.secret}"}
            )
        except HttpFailure as exc:
            self.counts.errors[exc.kind] += 1
            return
        received = now_ms()
        if status != 200:
            self.counts.errors[str(status)] += 1
            return
        if session.observe_poll(int(body["seq"])):
            self.counts.delay_ms.append(received - float(body["updated_at"]))

    async def run(self, start_wall: float) -> None:
        """Poll from ``start_wall`` until one interval past the drive, so that every last
        state can be seen; the first polls are spread over one interval."""
        loop = asyncio.get_running_loop()
        t0 = loop.time() + (start_wall - time.time())
        stop_at = t0 + self.conf.duration + self.conf.poll_interval
        customers = self.roster.customers
        n = max(1, len(customers))
        for customer in customers:
            self.roster.owner[customer.session.id] = customer
        await asyncio.gather(
            *(
                self.poll_client(c, t0 + self.conf.poll_interval * i / n, stop_at)
                for i, c in enumerate(customers)
            )
        )

    # Watchers: the poller shows the retired session's last state once more, then
    # switches (and only then is the new session driven).

    async def retire(self, customer: Customer, session: Tracked) -> None:
        return None

    async def adopt(self, customer: Customer, fresh: Tracked) -> bool:
        customer.next_session = fresh
        return False
