"""The door (web/admission.py, limits/admission.py): which requests pass it, and how
many at once."""

from __future__ import annotations

import asyncio
import time

import pytest

from paylive.limits.admission import ADDRESS_SHARE, OVERLOADED, SESSION_SHARE, Admission, Queued
from paylive.limits.gradient import GradientLimit
from paylive.metrics import REGISTRY
from paylive.web.admission import is_command, session_of


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/api/sessions", True),
        ("POST", "/api/sessions/ps_x/attempts", True),
        ("POST", "/api/sessions/ps_x/interrupt", True),
        ("POST", "/api/sessions/ps_x/cancel", True),
        ("POST", "/api/sessions/ps_x/complete", True),
        ("POST", "/api/sessions/ps_x/check", True),
        ("GET", "/api/sessions/ps_x", False),  # reads do not pass the door
        ("POST", "/webhooks/sandbox", False),  # a provider's result is accepted work
        ("POST", "/webhooks/stripe", False),
        ("POST", "/api/sessions/ps_x/attempts/extra", False),
        ("POST", "/api/admin/deliveries/evt_1/retry", False),
    ],
)
def test_which_requests_pass_the_door(method: str, path: str, expected: bool) -> None:
    assert is_command({"type": "http", "method": method, "path": path}) is expected


def test_the_door_counts_what_is_in_flight() -> None:
    door = Admission(limit=2, retry_after_s=1)
    assert door.enter() is None and door.enter() is None
    assert door.enter() is OVERLOADED, "a third command while two are in flight"
    assert door.in_flight == 2
    door.leave()
    assert door.enter() is None
    door.leave()
    door.leave()
    assert door.in_flight == 0


def test_the_door_names_the_session_of_a_command() -> None:
    assert session_of({"path": "/api/sessions/ps_x/attempts"}) == "ps_x"
    assert session_of({"path": "/api/sessions"}) is None


def test_no_session_and_no_address_takes_every_place() -> None:
    door = Admission(limit=4, retry_after_s=1, per_session=2, per_address=3)
    assert door.enter("ps_a", "10.0.0.1") is None
    assert door.enter("ps_a", "10.0.0.1") is None
    assert door.enter("ps_a", "10.0.0.1") is SESSION_SHARE, "a session past its share"
    assert door.enter("ps_b", "10.0.0.1") is None
    assert door.enter("ps_c", "10.0.0.1") is ADDRESS_SHARE, "an address past its share"
    assert door.enter("ps_c", "10.0.0.2") is None, "another address still gets in"
    assert door.enter("ps_d", "10.0.0.3") is OVERLOADED, "and the worker is full at 4"
    door.leave("ps_a", "10.0.0.1")
    assert door.enter("ps_a", "10.0.0.1") is None, "a place given back is taken again"
    for session, address in [("ps_a", "10.0.0.1")] * 2 + [
        ("ps_b", "10.0.0.1"),
        ("ps_c", "10.0.0.2"),
    ]:
        door.leave(session, address)
    assert door.in_flight == 0 and door.enter("ps_a", "10.0.0.1") is None


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def test_the_limit_metric_shows_a_fixed_bound_and_the_adaptive_start() -> None:
    Admission(limit=37, retry_after_s=1)
    assert _gauge("paylive_in_flight_limit") == 37, "a fixed bound read 0 before"
    Admission(limit=64, retry_after_s=1, adaptive=GradientLimit(20, 8, 64))
    assert _gauge("paylive_in_flight_limit") == 20, "the adaptive bound's starting point"


def _queued(door: Admission, since: float, session: str | None = None) -> Queued:
    held = door.queue(since, session)
    assert held is not None, "queued"
    return held


def test_a_command_waiting_for_its_task_holds_a_place() -> None:
    """Parsed whole and handed a task, a command counts before it reaches the door: the
    commands waiting in the loop's queue fill it too, and the next one is refused."""
    door = Admission(limit=2, retry_after_s=1)
    first = _queued(door, 1.0)
    _queued(door, 2.0)
    assert door.full and door.queued == 2
    assert door.enter() is OVERLOADED, "two commands waiting: no room for a third"
    door.unqueue(first)
    door.unqueue(first)  # given back twice (its connection went too): once counts
    assert door.queued == 1 and not door.full
    assert door.enter(since=first.since) is None
    assert door.full


def test_a_waiting_command_holds_a_place_only_within_its_share() -> None:
    """A queued command counts in its session's and address's share, and one past
    them, or past the last place, is not queued at all (the door decides on it when it
    gets there): commands pipelined on one connection each held a place, whatever the
    share, and a session's share was asked only at the door."""
    door = Admission(limit=4, retry_after_s=1, per_session=2, per_address=3)
    first = door.queue(1.0, "ps_a", "10.0.0.1")
    assert first is not None and door.queue(1.0, "ps_a", "10.0.0.1") is not None
    assert door.queue(1.0, "ps_a", "10.0.0.1") is None, "the session's share is queued"
    assert door.queued == 2 and not door.full
    assert door.enter("ps_a", "10.0.0.1") is SESSION_SHARE, "queued places are its share"
    assert door.queue(1.0, "ps_b", "10.0.0.1") is not None
    assert door.queue(1.0, "ps_c", "10.0.0.1") is None, "the address's share is queued"
    assert door.queue(1.0, "ps_c", "10.0.0.2") is not None and door.full
    assert door.queue(1.0, "ps_d", "10.0.0.3") is None, "no place left: nothing held"
    assert door.queued == 4
    door.unqueue(first)
    door.unqueue(first)  # once counts
    assert door.enter("ps_a", "10.0.0.1", since=first.since) is None, "its own place again"
    assert door.enter("ps_a", "10.0.0.1") is OVERLOADED, "and the worker is full"


def test_the_adaptive_limit_counts_waiting_commands_as_busy_and_its_latency() -> None:
    """A command's latency runs from when it was parsed, and the commands waiting count
    as in use, so a queue in the loop shrinks the limit though few run at once."""
    limit = GradientLimit(initial=16, min_limit=4, max_limit=64)
    door = Admission(limit=64, retry_after_s=1, adaptive=limit)

    def commands(rounds: int, waiting: int, latency_s: float) -> None:
        """``rounds`` times: ``waiting`` commands parsed ``latency_s`` ago queue, one of
        them runs to its end, and the rest go."""
        for _ in range(rounds):
            # As many as there are places: the protocol queues no more (Admission.queue).
            queued = (door.queue(time.monotonic() - latency_s) for _ in range(waiting))
            held = [h for h in queued if h is not None]
            door.unqueue(held.pop())
            door.enter(since=time.monotonic() - latency_s)
            door.leave()
            for h in held:
                door.unqueue(h)

    commands(300, waiting=15, latency_s=0.005)  # the baseline
    settled = limit.limit
    assert settled > 16, "busy (15 waiting) at a steady latency: it grows"
    commands(100, waiting=30, latency_s=0.05)  # twice as many waiting, ten times as long
    assert limit.limit < settled


def test_the_loops_own_lag_past_its_target_shrinks_the_adaptive_limit() -> None:
    limit = GradientLimit(initial=40, min_limit=8, max_limit=64)
    door = Admission(limit=64, retry_after_s=1, adaptive=limit, lag_target_s=0.010)
    door.lagged(0.005)
    assert door.limit == 40, "within the target: left alone"
    door.lagged(0.030)
    assert door.limit == 36
    for _ in range(100):
        door.lagged(0.030)
    assert door.limit == 8, "never below the floor"
    fixed = Admission(limit=64, retry_after_s=1)
    fixed.lagged(1.0)
    assert fixed.limit == 64, "a fixed bound stays fixed"


@pytest.mark.anyio
async def test_a_refusing_worker_starts_at_most_its_share_a_turn() -> None:
    """``per_turn``: a burst that fits the free places is taken whole; once the worker
    has refused, each turn starts at most its share (the protocol's queued commands and
    a socket's command alike) and refuses the rest though places are free, while the
    queued ones still take their places; ``refusing_for_s`` without a refusal ends it."""
    now = time.monotonic()
    door = Admission(limit=8, retry_after_s=1, per_turn=2, refusing_for_s=0.2)
    burst = [_queued(door, now) for _ in range(5)]
    assert not door.full, "not refusing: a burst within the free places is taken whole"
    for place in burst:
        door.unqueue(place)
        assert door.enter(since=place.since) is None
    assert all(door.enter() is None for _ in range(3))
    assert door.full and door.enter() is OVERLOADED, "eight in flight: refused"
    await asyncio.sleep(0)  # the loop's next turn

    for _ in range(6):
        door.leave()
    held = _queued(door, now)
    assert door.enter("ps_sock") is None, "the second start of the turn"
    assert door.full and door.enter("ps_late") is OVERLOADED, "its share is taken"
    door.unqueue(held)
    assert door.enter(since=held.since) is None, "queued: only a place is asked of it"
    assert door.in_flight == 4
    await asyncio.sleep(0)
    assert door.enter() is None and door.enter() is None
    assert door.full, "still refusing: the next turn's share too"
    door.refused()  # as the protocol says when it refuses on ``full``

    await asyncio.sleep(0.25)  # refusing_for_s with no refusal
    assert not door.full and door.enter() is None and door.enter() is None
    assert door.in_flight == 8
