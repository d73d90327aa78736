"""Token buckets per key (a session, a socket), kept in this worker's memory.

Per worker on purpose: a customer hammering one session is slowed wherever it lands,
and a shared bucket would cost an engine round trip on every command.

A bucket that has had the time to fill is the same as none, so a key leaves once its
bucket would be full: the buckets held are those of the keys seen within that time
(4 s for a session's commands, a minute for the demo), not every key ever seen up to
``max_keys``, which stays the bound on a burst of new keys.
"""

from __future__ import annotations

import time
from collections import OrderedDict


class TokenBuckets:
    def __init__(self, capacity: float, per_second: float, max_keys: int = 100_000) -> None:
        self.capacity = capacity
        self.per_second = per_second
        self.max_keys = max_keys
        # From empty to full: a bucket untouched for this long is full.
        self._fills_in = capacity / per_second
        # Least recently used first, so the ones that would be full are at the front.
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str, now: float | None = None) -> bool:
        """Spend one token for ``key``; False when it has none left."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) * self.per_second)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        buckets = self._buckets
        while buckets and now - buckets[next(iter(buckets))][1] >= self._fills_in:
            buckets.popitem(last=False)
        buckets[key] = (tokens, now)
        while len(buckets) > self.max_keys:
            buckets.popitem(last=False)  # the least recently used
        return allowed
