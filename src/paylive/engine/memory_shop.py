"""The memory engine's merchant events log and delivery records (engine/base.py).

Like the rest of the memory engine, every method runs without awaiting, so each is
atomic on the event loop.
"""

from __future__ import annotations

import bisect
import time
from collections import OrderedDict
from collections.abc import Sequence


def log_floor() -> int:
    """Where a new events log's cursors start: epoch ms x 1000, as the Redis engine's
    (lua/log_floor.lua), so a worker restarted with an empty log never gives again a
    cursor a shop already read past."""
    return int(time.time() * 1000) * 1000


class MemoryShop:
    """Mixed into ``MemoryEngine``."""

    _deliveries_kept: int

    def _init_shop(self, deliveries_kept: int) -> None:
        self._deliveries_kept = deliveries_kept
        self._log: list[tuple[int, str, int, bytes]] = []  # (cursor, id, created, record)
        self._log_ids: dict[str, int] = {}
        self._log_next = log_floor() + 1
        self._deliveries: dict[str, tuple[bytes, int]] = {}
        self._open: OrderedDict[str, None] = OrderedDict()
        self._done: OrderedDict[str, None] = OrderedDict()
        self._audit: list[bytes] = []  # oldest first

    # Events log ------------------------------------------------------------------

    async def log_append(self, entries: Sequence[tuple[str, int, bytes]]) -> list[int]:
        cursors: list[int] = []
        for event_id, created, record in entries:
            cursor = self._log_ids.get(event_id)
            if cursor is None:
                cursor = self._log_next
                self._log_next += 1
                self._log_ids[event_id] = cursor
                self._log.append((cursor, event_id, created, record))
            cursors.append(cursor)
        return cursors

    async def log_read(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        start = bisect.bisect_right(self._log, after, key=lambda entry: entry[0])
        return [(cursor, record) for cursor, _, _, record in self._log[start : start + limit]]

    async def log_first(self) -> int:
        return self._log[0][0] if self._log else self._log_next

    async def log_get(self, event_id: str) -> bytes | None:
        cursor = self._log_ids.get(event_id)
        if cursor is None:
            return None
        index = bisect.bisect_left(self._log, cursor, key=lambda entry: entry[0])
        return self._log[index][3]

    async def log_trim(self, before_ms: int, upto: int, limit: int) -> int:
        count = 0
        for cursor, event_id, created, _ in self._log[:limit]:
            if created >= before_ms or cursor > upto:
                break
            del self._log_ids[event_id]
            count += 1
        del self._log[:count]
        return count

    async def log_seed(self, at_least: int) -> None:
        if self._log_next <= at_least:
            self._log_next = max(log_floor(), at_least) + 1

    async def log_last(self, after: int) -> int:
        if self._log_next - 1 < after:
            self._log_next = max(self._log_next, log_floor() + 1)
        return self._log_next - 1

    # Deliveries ------------------------------------------------------------------

    async def delivery_put(self, event_id: str, record: bytes, open_: bool, at: int) -> None:
        self._deliveries[event_id] = (record, at)
        self._open.pop(event_id, None)
        self._done.pop(event_id, None)
        (self._open if open_ else self._done)[event_id] = None
        while len(self._done) > self._deliveries_kept:
            oldest, _ = self._done.popitem(last=False)
            del self._deliveries[oldest]

    async def delivery_get(self, event_id: str) -> bytes | None:
        held = self._deliveries.get(event_id)
        return held[0] if held else None

    async def deliveries(self, open_only: bool, limit: int) -> list[bytes]:
        ids = list(self._open) if open_only else [*self._open, *self._done]
        ids.sort(key=lambda event_id: self._deliveries[event_id][1], reverse=True)
        return [self._deliveries[event_id][0] for event_id in ids[:limit]]

    # Audit trail -----------------------------------------------------------------

    async def audit_add(self, entry: bytes, kept: int) -> None:
        self._audit_push(entry, kept)

    def _audit_push(self, entry: bytes, kept: int) -> None:
        """``audit_add``, also made by ``MemoryEngine.save`` for the action it saves."""
        self._audit.append(entry)
        del self._audit[:-kept]

    async def audit_read(self, start: int, count: int) -> list[bytes]:
        newest = len(self._audit) - start
        return self._audit[max(0, newest - count) : max(0, newest)][::-1]
