"""The delivery order of one socket (core.ordering), without sockets or an event loop:
hand-written cases, then seeded random streams that arrive late, twice, out of order
and during the catch-up, against the rule "every durable event once, in seq order"."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from paylive.core.ordering import SeqOrder

from ..support.seeds import blocks, check_seeds


@dataclass(frozen=True)
class Ev:
    name: str
    seq: int | None
    durable: bool = True


class Recorder(SeqOrder[Ev]):
    def __init__(self, ordered: bool = True) -> None:
        super().__init__(ordered)
        self.out: list[Ev] = []

    def push(self, event: Ev) -> None:
        self.out.append(event)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.out]


def ev(seq: int) -> Ev:
    return Ev(f"e{seq}", seq)


def test_events_wait_for_the_catch_up_then_skip_what_it_covered() -> None:
    order = Recorder()
    assert not order.deliver(ev(3))
    assert not order.deliver(ev(4))
    assert order.out == []  # not live yet: held
    assert not order.begin(3)  # the snapshot covered seq 3
    assert order.names == ["e4"]
    assert order.last_seq == 4


def test_a_gap_is_reported_and_filled_in_order() -> None:
    order = Recorder()
    order.begin(1)
    assert order.deliver(ev(4))  # 2 and 3 missing: a gap
    assert order.has_gap and order.out == []
    assert not order.deliver(ev(2))
    assert order.names == ["e2"] and order.has_gap
    assert not order.deliver(ev(3))  # fills it: 3 and the held 4 go out
    assert order.names == ["e2", "e3", "e4"] and not order.has_gap


def test_duplicates_and_older_events_are_dropped() -> None:
    order = Recorder()
    order.begin(0)
    for seq in (1, 1, 2, 1, 2, 3):
        order.deliver(ev(seq))
    assert order.names == ["e1", "e2", "e3"]


def test_events_that_are_not_durable_pass_straight_on() -> None:
    order = Recorder()
    order.begin(5)
    tick = Ev("countdown", 5, durable=False)
    assert not order.deliver(tick)
    assert order.deliver(ev(7))
    unsequenced = Ev("notice", None)
    order.deliver(unsequenced)
    assert order.out == [tick, unsequenced]


def test_an_unordered_stream_passes_everything_after_its_catch_up() -> None:
    feed = Recorder(ordered=False)
    feed.deliver(ev(9))
    assert feed.out == []
    assert not feed.begin(0)
    for seq in (3, 1, 3):
        assert not feed.deliver(ev(seq))
    assert feed.names == ["e9", "e3", "e1", "e3"]


def test_begin_reports_a_gap_among_the_held_events() -> None:
    order = Recorder()
    order.deliver(ev(2))
    order.deliver(ev(5))
    assert order.begin(1)
    assert order.names == ["e2"] and order.has_gap


def test_reset_pushes_the_snapshot_and_drops_what_it_covers() -> None:
    order = Recorder()
    order.begin(1)
    order.deliver(ev(3))
    order.deliver(ev(6))
    order.deliver(ev(7))
    snapshot = Ev("snapshot", 5, durable=False)
    order.reset(snapshot, 5)  # covers 2..5: 3 is stale, 6 and 7 follow at once
    assert order.out == [snapshot, ev(6), ev(7)]
    assert order.last_seq == 7 and not order.has_gap


def test_reset_never_moves_backwards() -> None:
    order = Recorder()
    order.begin(4)
    order.reset(Ev("snapshot", 2, durable=False), 2)
    assert order.last_seq == 4


# 300 seeds, 50 a test (tests/support/seeds.py).
@pytest.mark.parametrize("seeds", blocks(300), ids=lambda r: f"{r.start}-{r.stop - 1}")
def test_random_streams_deliver_every_event_once_in_order(seeds: range) -> None:
    check_seeds(seeds, random_stream_delivers_every_event_once_in_order)


def random_stream_delivers_every_event_once_in_order(seed: int) -> None:
    """A channel that duplicates, reorders and loses events, a catch-up at a random
    point, and a history that fills gaps (or, sometimes, no longer can: a snapshot)."""
    rng = random.Random(seed)
    total = rng.randint(1, 40)
    events = [ev(seq) for seq in range(1, total + 1)]
    arrivals = [e for e in events if rng.random() > 0.2]  # some lost on the channel
    arrivals += rng.sample(events, k=rng.randint(0, total))  # some twice
    arrivals.sort(key=lambda e: (e.seq or 0) + rng.uniform(-4, 4))  # locally shuffled
    caught_up = rng.randint(0, total)  # the snapshot's seq
    joined_at = rng.randint(0, len(arrivals))  # how many arrived before going live

    order = Recorder()
    for event in arrivals[:joined_at]:
        order.deliver(event)
    gap = order.begin(caught_up)
    for event in arrivals[joined_at:]:
        gap |= order.deliver(event)
        if gap and rng.random() < 0.3:
            gap = _fill(order, events, rng)
    if order.last_seq < total:
        _fill(order, events, rng)  # the end of the stream: the hub fills what is left

    durable = [e.seq or 0 for e in order.out if e.durable]
    assert durable == sorted(set(durable)), f"seed {seed}: out of order or twice: {durable}"
    every = [e.seq or 0 for e in order.out]
    assert every == sorted(every), f"seed {seed}: a snapshot went back: {every}"
    snapshots = [e.seq or 0 for e in order.out if not e.durable]
    covered = set(durable) | set(range(1, max(snapshots, default=0) + 1))
    missing = set(range(caught_up + 1, total + 1)) - covered
    assert not missing, f"seed {seed}: never delivered nor covered by a snapshot: {missing}"
    assert order.last_seq == total and not order.has_gap


def _fill(order: Recorder, events: list[Ev], rng: random.Random) -> bool:
    """What the hub does on a gap: replay the history after ``last_seq``, or, when the
    history no longer holds it, reset with a snapshot of the newest state."""
    if rng.random() < 0.8:
        for event in events[order.last_seq :]:
            order.deliver(event)
    else:
        newest = len(events)
        order.reset(Ev("snapshot", newest, durable=False), newest)
    return order.has_gap
