"""The pure parts of ``paylive load --restart-pid``: reading a restart's hint, the
reconnect delay it draws, and the per-second buckets of the report."""

from __future__ import annotations

from paylive.load.report import per_second, restart_report
from paylive.load.sockets import reconnect_delay_s, restart_hint_ms


def test_a_restarts_hint_is_read_from_its_close_reason() -> None:
    assert restart_hint_ms(1012, "restarting; reconnect_within_ms=2000") == 2000
    assert restart_hint_ms(1012, "restarting") is None
    assert restart_hint_ms(1001, "reconnect_within_ms=2000") is None
    assert restart_hint_ms(None, None) is None


def test_the_delay_is_drawn_within_the_hint_else_a_short_backoff() -> None:
    draws = [reconnect_delay_s(1012, "restarting; reconnect_within_ms=1000", 1) for _ in range(500)]
    assert all(0 <= d <= 1.0 for d in draws)
    assert min(draws) < 0.1 and max(draws) > 0.9, "spread over the hint"
    assert reconnect_delay_s(1001, "server shutting down: reconnect", 2) == 0.4


def test_buckets_count_each_second_from_the_signal() -> None:
    assert per_second([100.2, 100.9, 101.0, 103.5, 99.0], 100.0) == [2, 1, 0, 1]
    assert per_second([], 100.0) == []
    sockets = [
        {
            "closed_at": [100.1, 100.2, 101.5],
            "reconnect_tried_at": [100.4, 102.1],
            "reconnected": 2,
        },
        {"closed_at": [102.0], "reconnect_tried_at": [100.5, 103.9], "reconnected": 1},
    ]
    report = restart_report({"pid": 7, "after_s": 2.0, "signal_at": 100.0}, sockets, 0)
    assert report["closes_per_s"] == [2, 1, 1]
    assert report["reconnects_per_s"] == [2, 0, 1, 1]
    assert report["reconnects"] == 4 and report["reconnected"] == 3
    assert report["busiest_second_share"] == 0.5
    assert report["seconds_with_reconnects"] == 3
    assert report["events_lost"] == 0
