"""``paylive load``'s HTTP pool against a real server: ``warm`` leaves every connection
live, so that a drive after a long set-up starts on kept-alive connections."""

from __future__ import annotations

import asyncio

from paylive.load.http import RawPool, warm

from ..support.servers import Server
from ..support.waiting import until

KEEPALIVE_MS = 200


def _writers(pool: RawPool) -> list[object]:
    return [conn.writer for conn in pool._conns]


def test_warm_makes_again_what_the_keep_alive_closed_and_the_drive_keeps_it() -> None:
    with Server({"PAYLIVE_KEEPALIVE_MS": str(KEEPALIVE_MS)}) as srv:

        async def scenario() -> None:
            pool = RawPool(srv.url, 4)
            try:
                await warm(pool, "/healthz")
                first = _writers(pool)
                assert all(writer is not None for writer in first)
                # The server closes each idle connection after its keep-alive.
                readers = [conn.reader for conn in pool._conns]
                await until(lambda: all(r is not None and r.at_eof() for r in readers), 5.0)
                await warm(pool, "/healthz")
                again = _writers(pool)
                assert all(w is not None for w in again)
                assert not set(map(id, first)) & set(map(id, again)), "every one made again"
                # What the drive sends next goes on those same connections.
                answers = await asyncio.gather(*(pool.request("GET", "/healthz") for _ in range(4)))
                assert [status for status, _ in answers] == [200] * 4
                assert list(map(id, _writers(pool))) == list(map(id, again))
            finally:
                await pool.aclose()

        asyncio.run(scenario())
