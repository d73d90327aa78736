"""Token buckets per key (``limits.buckets``): what they let through, and what they
keep of keys that went away."""

from __future__ import annotations

from paylive.limits.buckets import TokenBuckets


def test_a_burst_then_the_rate() -> None:
    buckets = TokenBuckets(capacity=3, per_second=1)
    assert [buckets.take("a", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.take("a", now=1.0) and not buckets.take("a", now=1.0)
    assert buckets.take("b", now=1.0)  # another key has its own


def test_keys_that_went_away_leave_once_their_bucket_would_be_full() -> None:
    """A bucket that has had time to fill is the same as none, yet every key stayed
    until 100,000 newer ones pushed it out: 5,000 sessions (or addresses) seen once
    were all still held a day later. They leave once their bucket would be full."""
    buckets = TokenBuckets(capacity=20, per_second=5)
    for n in range(5_000):
        buckets.take(f"ps_{n}", now=n / 2_000)
    assert len(buckets) == 5_000  # within 2.5 s: none is full yet
    for n in range(3):
        buckets.take("ps_back", now=7 + n)
    assert len(buckets) == 1
    # A key is not forgotten while its bucket is still filling (4 s from empty).
    assert all(buckets.take("busy", now=20.0) for _ in range(20))
    buckets.take("other", now=23.0)
    assert [buckets.take("busy", now=23.0) for _ in range(16)].count(True) == 15
