"""The adaptive in-flight limit (``web.limit.GradientLimit``), driven by latencies."""

from __future__ import annotations

from paylive.web.limit import GradientLimit


def _drive(limit: GradientLimit, rtt: float, samples: int, busy: bool = True) -> None:
    for _ in range(samples):
        limit.sample(rtt, limit.limit if busy else 1)


def test_grows_while_latency_holds_and_stops_at_the_maximum() -> None:
    limit = GradientLimit(initial=16, min_limit=4, max_limit=64)
    _drive(limit, 0.005, 200)
    assert limit.limit > 16
    _drive(limit, 0.005, 5_000)
    assert limit.limit == 64


def test_shrinks_when_a_queue_forms_and_never_below_the_minimum() -> None:
    limit = GradientLimit(initial=64, min_limit=4, max_limit=64)
    _drive(limit, 0.005, 1_000)  # the baseline: 5 ms
    assert limit.limit == 64
    _drive(limit, 0.050, 300)  # ten times slower: commands are queueing
    assert limit.limit < 32
    _drive(limit, 0.500, 5_000)
    assert limit.limit >= 4


def test_comes_back_once_latency_does() -> None:
    limit = GradientLimit(initial=64, min_limit=4, max_limit=64)
    _drive(limit, 0.005, 1_000)
    _drive(limit, 0.080, 400)
    low = limit.limit
    assert low < 32
    _drive(limit, 0.005, 2_000)
    assert limit.limit == 64 > low


def test_an_idle_worker_keeps_its_limit() -> None:
    limit = GradientLimit(initial=16, min_limit=4, max_limit=64)
    _drive(limit, 0.005, 500, busy=False)
    _drive(limit, 0.500, 500, busy=False)
    assert limit.limit == 16


def test_one_slow_command_is_not_a_queue() -> None:
    limit = GradientLimit(initial=32, min_limit=4, max_limit=64)
    _drive(limit, 0.005, 1_000)
    before = limit.limit
    for i in range(300):
        # One in ten is a slow provider call: the median of each window ignores it.
        limit.sample(1.0 if i % 10 == 0 else 0.005, limit.limit)
    assert limit.limit >= before
