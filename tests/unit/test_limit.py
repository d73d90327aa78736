"""The adaptive in-flight limit (``limits.gradient.GradientLimit``), driven by latencies."""

from __future__ import annotations

from paylive.limits.gradient import GradientLimit


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
    limit = GradientLimit(initial=64, min_limit=8, max_limit=64)
    _drive(limit, 0.005, 1_000)  # the baseline: 5 ms
    assert limit.limit == 64
    _drive(limit, 0.050, 100)  # ten times slower at once: commands are queueing
    assert limit.limit < 45
    for _ in range(20):
        _drive(limit, 0.050 * 10, 10)  # ever slower: it keeps shrinking, down to the floor
    assert 8 <= limit.limit < 45


def test_a_lasting_slow_spell_becomes_the_baseline() -> None:
    """A worker that gets less CPU for a while is slower at any limit: after a dip,
    the slower latency becomes the baseline and the limit comes back, rather than
    starving the worker of work it can do at that latency."""
    limit = GradientLimit(initial=64, min_limit=8, max_limit=64)
    _drive(limit, 0.005, 1_000)
    _drive(limit, 0.050, 100)
    low = limit.limit
    assert low < 45
    _drive(limit, 0.050, 1_000)
    assert limit.limit == 64 > low
    _drive(limit, 0.005, 500)  # and back to fast: still at the top
    assert limit.limit == 64


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


def test_a_late_loop_shrinks_the_limit_by_a_tenth_a_tick_down_to_the_floor() -> None:
    limit = GradientLimit(initial=50, min_limit=8, max_limit=64)
    limit.lagged(0.009, target=0.010)
    assert limit.limit == 50
    limit.lagged(0.011, target=0.010)
    assert limit.limit == 45
    limit.lagged(1.0, target=0.0)
    assert limit.limit == 45, "no target: the lag says nothing"
    for _ in range(50):
        limit.lagged(0.5, target=0.010)
    assert limit.limit == 8
    limit.lagged(0.001, target=0.010)  # on time again
    _drive(limit, 0.005, 2_000)
    assert limit.limit > 8, "the gradient grows it back while latency holds"


def test_it_does_not_grow_while_the_loop_is_late() -> None:
    limit = GradientLimit(initial=20, min_limit=4, max_limit=64)
    limit.lagged(0.050, target=0.010)
    held = limit.limit
    _drive(limit, 0.005, 500)
    assert limit.limit == held, "latency holds, but the loop is late: no growth"
    limit.lagged(0.001, target=0.010)
    _drive(limit, 0.005, 500)
    assert limit.limit > held
