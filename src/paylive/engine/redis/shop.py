"""The merchant events log and webhook delivery records (engine/base.py; the keys
are in ``keys``). The events themselves wait in the session's outbox, in its record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...settings import RedisSettings
from ..base import ShopStore
from . import scripts
from .client import Client
from .keys import AUDIT, DELIVERIES, DONE, LOG, LOG_NEXT, LOG_RECORDS, LOG_TIMES, OPEN


class Shop(ShopStore):
    """Mixed into ``RedisEngine``, which sets ``_client`` and ``_settings``."""

    _client: Client
    _settings: RedisSettings
    # The highest cursor this worker was given: a counter found at or below it went
    # back (a replica that lost the tail), and log_append.lua moves it past the clock.
    _log_given: int = 0

    # Events log ------------------------------------------------------------------

    async def log_append(self, entries: Sequence[tuple[str, int, bytes]]) -> list[int]:
        if not entries:
            return []
        args: list[Any] = [self._log_given]
        for event_id, created, record in entries:
            args += [event_id, created, record]
        keys = [LOG, LOG_RECORDS, LOG_TIMES, LOG_NEXT]
        async with self._client.op():
            cursors = await self._client.eval(scripts.LOG_APPEND, keys, args)
        given = [int(c) for c in cursors]
        self._log_given = max(self._log_given, *given)
        return given

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

    async def log_last(self, after: int) -> int:
        async with self._client.op():
            return int(await self._client.eval(scripts.LOG_LAST, [LOG_NEXT], [after]))

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

    # Audit trail -----------------------------------------------------------------

    async def audit_add(self, entry: bytes, kept: int) -> None:
        r: Any = self._client.r
        async with self._client.op():
            async with r.pipeline(transaction=True) as pipe:
                pipe.lpush(AUDIT, entry)
                pipe.ltrim(AUDIT, 0, kept - 1)
                await pipe.execute()

    async def audit_read(self, start: int, count: int) -> list[bytes]:
        r: Any = self._client.r
        async with self._client.op():
            entries: Any = await r.lrange(AUDIT, start, start + count - 1)
        return list(entries)
