"""The merchant outbox, the events log and webhook delivery records (engine/base.py).

Keys
----
- ``paylive:{<id>}:o``, a list: the session's merchant outbox, oldest first. It
  shares the session's hash tag, so the save scripts append to it in the same atomic
  step as the decision (on Cluster too). It expires ``merchant_retry_for_ms`` plus a
  day after its last push, long after a delivery gives up, and outlives the session.
- ``paylive:{_global}:mout``, a zset: session id -> when its outbox is due (a lease
  end while a worker holds it). On one node the save script indexes the session in
  the same step. On Cluster the index lives in another slot: ``save_global.lua``
  indexes it right after the save (``NX``), and a pop that empties an outbox
  unindexes and then looks at the list again, so an item pushed meanwhile is never
  left unindexed. Like the counters there, a worker killed between the two steps of
  a save leaves its items stored but unindexed until the session's next save.
- ``:log`` (zset event id -> cursor), ``:logr`` (hash id -> record), ``:logt`` (hash
  id -> created ms) and ``:logn`` (the last cursor given), all ``{_global}``: the
  events log, appended once per id by one script, so cursors follow append order.
- ``:dlv`` (hash id -> delivery record), ``:dlvopen`` and ``:dlvdone`` (zsets id ->
  last change), all ``{_global}``: webhook deliveries; done ones capped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...settings import Settings
from ..base import ShopStore
from . import scripts
from .client import Client
from .keys import PREFIX

_G = f"{PREFIX}:{{_global}}"
MERCHANT_OUTBOX = f"{_G}:mout"
LOG, LOG_RECORDS, LOG_TIMES, LOG_NEXT = f"{_G}:log", f"{_G}:logr", f"{_G}:logt", f"{_G}:logn"
DELIVERIES, OPEN, DONE = f"{_G}:dlv", f"{_G}:dlvopen", f"{_G}:dlvdone"
DAY_MS = 24 * 3600 * 1000


def outbox_key(session_id: str) -> str:
    return f"{PREFIX}:{{{session_id}}}:o"


def outbox_ttl_ms(settings: Settings) -> int:
    return settings.merchant_retry_for_ms + DAY_MS


class Shop(ShopStore):
    """Mixed into ``RedisEngine``, which sets ``_client`` and ``_settings``."""

    _client: Client
    _settings: Settings

    # Outbox ------------------------------------------------------------------

    async def outbox_push(self, session_id: str, items: Sequence[bytes]) -> None:
        if not items:
            return
        client, ttl = self._client, outbox_ttl_ms(self._settings)
        async with client.op():
            if client.cluster:
                await client.eval(scripts.OUTBOX_PUSH, [outbox_key(session_id)], [ttl, *items])
                await client.r.zadd(MERCHANT_OUTBOX, {session_id: 0}, nx=True)
            else:
                await client.eval(
                    scripts.OUTBOX_PUSH_ONE_NODE,
                    [outbox_key(session_id), MERCHANT_OUTBOX],
                    [ttl, session_id, *items],
                )

    async def outbox_claim(self, now: int, limit: int, lease_ms: int) -> list[str]:
        async with self._client.op():
            ids = await self._client.eval(
                scripts.OUTBOX_CLAIM, [MERCHANT_OUTBOX], [now, limit, now + lease_ms]
            )
        return [i.decode() for i in ids]

    async def outbox_head(self, session_id: str, limit: int) -> list[bytes]:
        async with self._client.op():
            items: Any = await self._client.r.lrange(outbox_key(session_id), 0, limit - 1)
        return list(items)

    async def outbox_pop(self, session_id: str, item: bytes) -> bool:
        client, key = self._client, outbox_key(session_id)
        async with client.op():
            if not client.cluster:
                popped = await client.eval(
                    scripts.OUTBOX_POP_ONE_NODE, [key, MERCHANT_OUTBOX], [item, session_id]
                )
                return int(popped) >= 0
            left = int(await client.eval(scripts.OUTBOX_POP, [key], [item]))
            if left in (0, -2):
                await client.r.zrem(MERCHANT_OUTBOX, session_id)
                if await client.r.llen(key):
                    await client.r.zadd(MERCHANT_OUTBOX, {session_id: 0})
        return left >= 0

    async def outbox_later(self, session_id: str, due: int) -> None:
        async with self._client.op():
            await self._client.r.zadd(MERCHANT_OUTBOX, {session_id: due}, xx=True)

    async def outbox_pending(self) -> int:
        async with self._client.op():
            return int(await self._client.r.zcard(MERCHANT_OUTBOX))

    # Events log ------------------------------------------------------------------

    async def log_append(self, entries: Sequence[tuple[str, int, bytes]]) -> list[int]:
        if not entries:
            return []
        args: list[Any] = []
        for event_id, created, record in entries:
            args += [event_id, created, record]
        keys = [LOG, LOG_RECORDS, LOG_TIMES, LOG_NEXT]
        async with self._client.op():
            cursors = await self._client.eval(scripts.LOG_APPEND, keys, args)
        return [int(c) for c in cursors]

    async def log_read(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        async with self._client.op():
            flat = await self._client.eval(scripts.LOG_READ, [LOG, LOG_RECORDS], [after, limit])
        return [(int(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]

    async def log_first(self) -> int:
        r: Any = self._client.r
        async with self._client.op():
            head = await r.zrange(LOG, 0, 0, withscores=True)
            if head:
                return int(head[0][1])
            return int(await r.get(LOG_NEXT) or 0) + 1

    async def log_get(self, event_id: str) -> bytes | None:
        async with self._client.op():
            record: Any = await self._client.r.hget(LOG_RECORDS, event_id)
        return record  # type: ignore[no-any-return]

    async def log_trim(self, before_ms: int, upto: int, limit: int) -> int:
        keys = [LOG, LOG_RECORDS, LOG_TIMES]
        async with self._client.op():
            return int(await self._client.eval(scripts.LOG_TRIM, keys, [before_ms, upto, limit]))

    async def log_seed(self, at_least: int) -> None:
        async with self._client.op():
            await self._client.eval(scripts.LOG_SEED, [LOG_NEXT], [at_least])

    # Deliveries ------------------------------------------------------------------

    async def delivery_put(self, event_id: str, record: bytes, open_: bool, at: int) -> None:
        args = [event_id, record, "1" if open_ else "0", at, self._settings.deliveries_kept]
        async with self._client.op():
            await self._client.eval(scripts.DELIVERY_PUT, [DELIVERIES, OPEN, DONE], args)

    async def delivery_get(self, event_id: str) -> bytes | None:
        async with self._client.op():
            record: Any = await self._client.r.hget(DELIVERIES, event_id)
        return record  # type: ignore[no-any-return]

    async def deliveries(self, open_only: bool, limit: int) -> list[bytes]:
        r: Any = self._client.r
        async with self._client.op():
            ranked: Any = await r.zrevrange(OPEN, 0, limit - 1, withscores=True)
            if not open_only:
                ranked += await r.zrevrange(DONE, 0, limit - 1, withscores=True)
                ranked.sort(key=lambda pair: pair[1], reverse=True)
                ranked = ranked[:limit]
            if not ranked:
                return []
            records = await r.hmget(DELIVERIES, [i for i, _ in ranked])
        return [record for record in records if record is not None]
