"""The load generator's accounting, without sockets: what counts as sent, received, lost."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

import paylive.load
from paylive.load.accounting import Tally, count_events, worker_result
from paylive.load.config import Config, LoadError, plan
from paylive.load.records import FeedRecord, Tracked
from paylive.load.report import merge, percentiles

from ..support.source import parse


def session(seq: int = 0, status: str = "created") -> Tracked:
    return Tracked({"id": "s1", "client_secret": "x", "seq": seq, "status": status})


def event(seq: int, ts: float = 1000.0, kind: str = "state") -> dict[str, object]:
    return {"type": kind, "seq": seq, "ts": ts, "session": "s1"}


def test_in_order_events_after_the_snapshot_are_all_received() -> None:
    s = session()
    assert s.observe({"type": "snapshot", "seq": 2}, 5000.0) is None
    for seq in (3, 4, 5):
        assert s.observe(event(seq, ts=1000.0), 1004.5) == pytest.approx(4.5)
    s.observed, s.final = True, 5
    counted, totals = count_events([s])
    assert counted == 1
    assert totals["sent"] == 3 and totals["received"] == 3 and totals["lost"] == 0
    assert totals["gaps"] == 0 and totals["out_of_order"] == 0


def test_a_gap_and_a_missing_tail_are_lost_and_a_duplicate_is_out_of_order() -> None:
    s = session()
    s.observe({"type": "snapshot", "seq": 0}, 0.0)
    s.observe(event(1), 0.0)
    s.observe(event(3), 0.0)  # 2 never came
    s.observe(event(3), 0.0)  # delivered twice
    s.observed, s.final = True, 5  # 4 and 5 never came either
    _, totals = count_events([s])
    assert totals["sent"] == 5 and totals["received"] == 2 and totals["lost"] == 3
    assert totals["gaps"] == 1 and totals["out_of_order"] == 1


def test_a_resync_snapshot_stands_for_events_that_stay_lost() -> None:
    s = session()
    s.observe({"type": "snapshot", "seq": 0}, 0.0)
    s.observe(event(1), 0.0)
    s.observe({"type": "snapshot", "seq": 4}, 0.0)  # 2, 3, 4 skipped
    s.observe(event(5), 0.0)
    s.observed, s.final = True, 5
    _, totals = count_events([s])
    assert (totals["received"], totals["lost"]) == (2, 3)


def test_unobserved_sessions_and_unknown_finals_are_not_counted() -> None:
    watched, unwatched, unknown = session(), session(), session()
    for s in (watched, unwatched, unknown):
        s.observe({"type": "snapshot", "seq": 0}, 0.0)
    watched.observed, watched.final = True, 2
    unwatched.final = 2
    unknown.observed = True
    counted, totals = count_events([watched, unwatched, unknown])
    assert counted == 1 and totals["sent"] == 2 and totals["lost"] == 2


def test_answers_overtaken_by_newer_ones_do_not_move_the_session_back() -> None:
    s = session()
    s.apply({"seq": 3, "status": "processing"})
    s.apply({"seq": 2, "status": "interrupted"})
    assert (s.seq, s.status) == (3, "processing") and s.states == {3}


def test_polls_count_the_states_hidden_in_seq_jumps() -> None:
    s = session()
    s.base = s.last = 0
    assert s.observe_poll(1) and s.observe_poll(4) and not s.observe_poll(4)
    assert s.missed == 2 and s.seen == {1, 4}


def test_an_admin_feed_counts_each_session_in_order_once() -> None:
    feed = FeedRecord()
    assert feed.observe({"type": "countdown", "session": "s1"}, 0.0) is None
    assert feed.observe(event(1, ts=10.0), 12.0) == pytest.approx(2.0)
    feed.observe(event(2), 0.0)
    feed.observe(event(2), 0.0)
    assert feed.as_dict()["received"] == {"s1": 2}
    assert feed.disorder == 1 and feed.types["state"] == 3


def conf(**overrides: object) -> Config:
    base: dict[str, object] = dict(
        index=0,
        base_url="http://127.0.0.1:1",
        ws_url="ws://127.0.0.1:1",
        api_key="k",
        admin_token="t",
        sockets=1,
        admins=1,
        rate=1.0,
        duration=1.0,
        report_finals=True,
    )
    return Config(**{**base, **overrides})  # type: ignore[arg-type]


class _Samples:
    pid = None
    also: list[int] = []
    server: dict[str, None] = {}
    others: dict[str, None] = {}


def test_merge_counts_admin_events_against_the_servers_finals() -> None:
    s = session()
    s.observe({"type": "snapshot", "seq": 0}, 0.0)
    for seq in (1, 2, 3):
        s.observe(event(seq), 0.0)
    s.observed, s.final = True, 3
    feed = FeedRecord()
    feed.observe(event(1), 0.0)
    feed.observe(event(3), 0.0)  # 2 never reached this feed
    result = worker_result(conf(), Tally(), [s], [], [feed])
    args = argparse.Namespace(duration=1.0, format="json", sockets=1, admins=1, rate=1.0)
    merged = merge(args, [conf()], [result], _Samples(), {"user_s": 0, "sys_s": 0, "wall_s": 1}, {})
    assert merged["events"]["lost"] == 0 and merged["events"]["received"] == 3
    assert merged["admin"]["events_expected"] == 3 and merged["admin"]["lost"] == 1
    assert not merged["ok"] and any("admin feeds" in p for p in merged["problems"])


def test_percentiles_are_nearest_rank() -> None:
    p = percentiles(float(x) for x in range(1, 101))
    assert (p["count"], p["p50"], p["p90"], p["p99"], p["max"]) == (100, 50, 90, 99, 100)
    assert percentiles([])["p99"] is None


def test_plan_shares_the_work_out_and_the_config_crosses_a_pipe() -> None:
    args = argparse.Namespace(
        url="http://127.0.0.1:8000",
        api_key="k",
        sockets=5,
        admins=3,
        rate=10.0,
        duration=2.0,
        format="json",
        processes=2,
        admin_token="t",
    )
    configs = plan(args)
    assert [c.sockets for c in configs] == [3, 2] and [c.admins for c in configs] == [2, 1]
    assert [c.rate for c in configs] == [5.0, 5.0]
    assert Config.from_json(configs[1].to_json()) == configs[1]
    with pytest.raises(LoadError, match="unknown configuration keys"):
        Config.from_json('{"index": 0, "surprise": 1}')


def test_the_admin_token_is_read_as_the_server_reads_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A rotation list gives its first (newest) entry, and the file variant counts: the
    whole list sent as one token was refused by the server (its admin feeds never
    opened)."""
    newest, older = "admin-token-newest-0123456789", "admin-token-older-0123456789"
    args = argparse.Namespace(
        url="http://127.0.0.1:8000",
        api_key="k",
        sockets=1,
        admins=1,
        rate=1.0,
        duration=1.0,
        format="json",
        processes=1,
        admin_token=None,
    )
    monkeypatch.delenv("PAYLIVE_ADMIN_TOKEN_FILE", raising=False)
    monkeypatch.setenv("PAYLIVE_ADMIN_TOKEN", f"{newest},{older}")
    assert plan(args)[0].admin_token == newest
    monkeypatch.delenv("PAYLIVE_ADMIN_TOKEN")
    (tmp_path / "admin").write_text(f"{newest}, {older}\n")
    monkeypatch.setenv("PAYLIVE_ADMIN_TOKEN_FILE", str(tmp_path / "admin"))
    assert plan(args)[0].admin_token == newest
    args.admin_token = "given-on-the-command-line-0123"
    assert plan(args)[0].admin_token == "given-on-the-command-line-0123"


def test_the_generator_imports_only_the_protocol_the_exception_root_and_settings() -> None:
    package = Path(paylive.load.__file__).parent
    for path in package.glob("*.py"):
        tree = parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 2:
                allowed = ("core.protocol", "errors", "settings")
                assert node.module in allowed, f"{path.name} imports ..{node.module}"
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert not node.module.startswith("paylive"), f"{path.name}: {node.module}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("paylive") for a in node.names), path.name
