"""The worker's answer to "does the engine take writes?" for ``/readyz``, bounded in
cost: a probe every second from every load balancer and kubelet would otherwise be a
steady stream of writes (to the append-only file and to every replica).

The answer of the last check is reused for ``reuse_ms`` from when that check began,
and checks asked for at once share the one in flight, so a worker writes at most
once per ``reuse_ms`` (and per check's duration) however often it is asked, and a
failure shows in the answer at most ``reuse_ms`` after the check that would see it
could begin (docs/protocol.md section 3.1).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from ..engine import Engine, EngineUnavailable


class WriteProbe:
    """``check``: True when the engine takes writes, False when it answers and refuses
    them, None when it does not answer (``Engine.writable``, shared and reused)."""

    def __init__(
        self, engine: Engine, reuse_ms: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._engine = engine
        self._reuse_s = reuse_ms / 1000
        self._clock = clock
        self._answer: bool | None = None
        self._asked_at: float | None = None
        self._running: asyncio.Task[bool | None] | None = None

    async def check(self) -> bool | None:
        running = self._running
        if running is None:
            now = self._clock()
            asked_at = self._asked_at
            if asked_at is not None and now - asked_at < self._reuse_s:
                return self._answer
            self._asked_at = now
            running = self._running = asyncio.create_task(self._ask(), name="paylive-ready")
        # Shielded: a probe whose client hung up must not cancel the check the
        # others wait for.
        return await asyncio.shield(running)

    async def _ask(self) -> bool | None:
        try:
            answer: bool | None = await self._engine.writable()
        except EngineUnavailable:
            answer = None
        except BaseException:
            self._asked_at = None  # nothing learned: the next probe asks again
            raise
        finally:
            self._running = None
        self._answer = answer
        return answer
