"""The memory engine's merchant outbox, events log and delivery records (engine/base.py).

Like the rest of the memory engine, every method runs without awaiting, so each is
atomic on the event loop.
"""

from __future__ import annotations

import bisect
import heapq
from collections import OrderedDict, deque
from collections.abc import Sequence


class MemoryShop:
    """Mixed into ``MemoryEngine``; ``save`` calls ``_outbox_add`` in its one step."""

    _deliveries_kept: int

    def _init_shop(self, deliveries_kept: int) -> None:
        self._deliveries_kept = deliveries_kept
        self._outbox: dict[str, deque[bytes]] = {}
        self._outbox_due: dict[str, int] = {}
        self._outbox_heap: list[tuple[int, str]] = []
        self._log: list[tuple[int, str, int, bytes]] = []  # (cursor, id, created, record)
        self._log_ids: dict[str, int] = {}
        self._log_next = 1
        self._deliveries: dict[str, tuple[bytes, int]] = {}
        self._open: OrderedDict[str, None] = OrderedDict()
        self._done: OrderedDict[str, None] = OrderedDict()

    # Outbox ------------------------------------------------------------------

    def _outbox_add(self, session_id: str, items: Sequence[bytes], due: int) -> None:
        if not items:
            return
        self._outbox.setdefault(session_id, deque()).extend(items)
        if session_id not in self._outbox_due:
            self._outbox_set(session_id, due)

    def _outbox_set(self, session_id: str, due: int) -> None:
        self._outbox_due[session_id] = due
        heapq.heappush(self._outbox_heap, (due, session_id))

    async def outbox_push(self, session_id: str, items: Sequence[bytes]) -> None:
        # Due at once, unless the session's outbox is leased or waiting for a retry:
        # then the new items wait behind the head, in order.
        self._outbox_add(session_id, items, 0)

    async def outbox_claim(self, now: int, limit: int, lease_ms: int) -> list[str]:
        out: list[str] = []
        while self._outbox_heap and self._outbox_heap[0][0] <= now and len(out) < limit:
            due, session_id = heapq.heappop(self._outbox_heap)
            if self._outbox_due.get(session_id) != due:
                continue  # superseded
            self._outbox_set(session_id, now + lease_ms)
            out.append(session_id)
        return out

    async def outbox_head(self, session_id: str, limit: int) -> list[bytes]:
        items = self._outbox.get(session_id)
        return list(items)[:limit] if items else []

    async def outbox_pop(self, session_id: str, item: bytes) -> bool:
        items = self._outbox.get(session_id)
        if not items:
            self._outbox_due.pop(session_id, None)
            return False
        if items[0] != item:
            return False
        items.popleft()
        if not items:
            del self._outbox[session_id]
            self._outbox_due.pop(session_id, None)
        return True

    async def outbox_later(self, session_id: str, due: int) -> None:
        if session_id in self._outbox:
            self._outbox_set(session_id, due)

    async def outbox_pending(self) -> int:
        return len(self._outbox)

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
        self._log_next = max(self._log_next, at_least + 1)

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
