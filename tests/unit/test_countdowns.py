"""Countdowns are spread: each processing session with local sockets gets one per
interval, on its own slice of the interval, never all of a worker's in one burst."""

from __future__ import annotations

import anyio
import pytest

from paylive.core.codec import Encoded
from paylive.core.session import PROCESSING
from paylive.engine.memory import MemoryEngine
from paylive.fanout.hub import Hub, Subscriber
from paylive.runtime import Runtime
from paylive.settings import Settings

pytestmark = pytest.mark.anyio
SESSIONS = 500
SLICES = 50


async def _snapshot(_resync: bool) -> Encoded:
    raise AssertionError("no admin feed here")


async def test_each_session_once_per_round_in_even_slices() -> None:
    hub = Hub(MemoryEngine(Settings().engine), _snapshot, lambda: 0, countdown_slices=SLICES)
    sent: list[str | bytes] = []

    async def send(frame: str | bytes) -> None:
        sent.append(frame)

    async def close(code: int, reason: str) -> None:
        raise AssertionError(f"closed {code} {reason}")

    for n in range(SESSIONS):
        subscriber = Subscriber("customer", "json", 8, send, close)
        await hub.join(f"ps_{n}", subscriber)
        subscriber.begin(0)
        channel = hub.channels[f"ps_{n}"]
        # Half of them processing (with a deadline), half not: only those tick.
        if n % 2 == 0:
            channel.status, channel.deadline = PROCESSING, 30_000
    per_slice = [hub.countdown_sweep(1_000, part) for part in range(SLICES)]
    assert sum(per_slice) == SESSIONS // 2  # each processing session once per round
    # Spread: no slice holds more than a few times its share (250 / 50 = 5).
    assert max(per_slice) <= 20, per_slice
    await anyio.sleep(0)  # the writers run
    assert len(sent) == SESSIONS // 2 and all('"countdown"' in str(f) for f in sent)
    assert sum(1 for n in per_slice if n) >= SLICES // 2
    # A second round is the same sessions in the same slices (each keeps its phase).
    assert [hub.countdown_sweep(2_000, part) for part in range(SLICES)] == per_slice


def test_slices_are_at_least_20_ms_apart() -> None:
    assert Runtime(Settings())._slices == 50  # 1,000 ms: a slice every 20 ms
    assert Runtime(Settings(countdown_interval_ms=200))._slices == 10
    assert Runtime(Settings(countdown_slices=4))._slices == 4


async def test_a_worker_without_customer_sockets_does_not_tick() -> None:
    # An idle worker's countdown loop woke 50 times a second to sweep nothing: it now
    # sleeps until a customer channel opens, and ticks again from then on.
    runtime = Runtime(Settings(countdown_interval_ms=200))
    sweeps: list[int] = []
    sweep = runtime.hub.countdown_sweep

    def counted(now: int, part: int = 0) -> int:
        sweeps.append(part)
        return sweep(now, part)

    runtime.hub.countdown_sweep = counted  # type: ignore[method-assign]
    await runtime.start()
    try:
        await anyio.sleep(0.3)  # 15 ticks of 20 ms, were there a socket
        assert sweeps == []
        subscriber = Subscriber("customer", "json", 8, _never_sent, _never_closed)
        await runtime.hub.join("ps_idle", subscriber)
        await anyio.sleep(0.3)
        assert len(sweeps) >= 5, sweeps
        await runtime.hub.leave("ps_idle", subscriber)
        await anyio.sleep(0.05)  # a tick already due may still run
        ticked = len(sweeps)
        await anyio.sleep(0.3)
        assert len(sweeps) == ticked
    finally:
        await runtime.stop()


async def _never_sent(frame: str | bytes) -> None:
    raise AssertionError(f"sent {frame!r}")


async def _never_closed(code: int, reason: str) -> None:
    raise AssertionError(f"closed {code} {reason}")
