"""The server's own readings in ``paylive load``: each worker's event-loop lag from
``/metrics`` and Redis's commands, round trips and bytes per change from ``INFO``."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from paylive.load.serverstats import (
    gc_between,
    lag_between,
    parse_lag,
    parse_metrics,
    redis_between,
)

from ..support.redisproc import start_redis
from ..support.servers import API_KEY, Server
from ..support.waiting import until
from .test_load import BENCH_ENV, run

PAGE = """# HELP paylive_loop_lag_seconds lag
paylive_loop_lag_seconds_bucket{le="0.001",worker="11"} %d
paylive_loop_lag_seconds_bucket{le="0.05",worker="11"} %d
paylive_loop_lag_seconds_bucket{le="+Inf",worker="11"} %d
paylive_loop_lag_seconds_bucket{le="0.001",worker="12"} 5.0
paylive_loop_lag_seconds_bucket{le="0.05",worker="12"} 5.0
paylive_loop_lag_seconds_bucket{le="+Inf",worker="12"} 5.0
paylive_loop_lag_seconds_count{worker="11"} 9
"""


def test_lag_is_the_difference_between_two_readings_per_worker() -> None:
    before = parse_lag(PAGE % (10, 10, 10))
    # 100 ticks during the drive: 98 within 1 ms, 1 within 50 ms, 1 beyond.
    after = parse_lag(PAGE % (108, 109, 110))
    lag = lag_between(before, after)
    assert lag is not None
    # Worker 12 ticked no more between the readings: it is not reported.
    assert list(lag["workers"]) == ["11"]
    w = lag["workers"]["11"]
    assert w["ticks"] == 100
    assert w["p99_ms"] == 50.0  # 99 of 100 within 50 ms, not within 1 ms
    assert w["max_ms"] is None  # the last one is past the last finite bucket
    assert w["over_50ms"] == 1
    assert lag_between(before, None) is None


def test_gc_pauses_between_two_readings() -> None:
    page = """paylive_gc_pause_seconds_bucket{generation="2",le="0.05",worker="7"} %d
paylive_gc_pause_seconds_bucket{generation="2",le="0.1",worker="7"} %d
paylive_gc_pause_seconds_bucket{generation="2",le="+Inf",worker="7"} %d
paylive_gc_pause_seconds_count{generation="2",worker="7"} %d
paylive_gc_pause_seconds_sum{generation="2",worker="7"} %f
"""
    before = parse_metrics(page % (1, 1, 1, 1, 0.01))
    after = parse_metrics(page % (2, 3, 3, 3, 0.15))
    got = gc_between(before, after)
    assert got == {"7": {"gen2": {"collections": 2, "total_ms": 140.0, "max_ms": 100.0}}}
    assert gc_between(after, after) is None  # none in between


def test_redis_figures_per_change_leave_out_the_readings_themselves() -> None:
    before = {
        "calls": {"evalsha": 10, "info": 4, "get": 1},
        "net_input_bytes": 1000,
        "net_output_bytes": 500,
        "reads_processed": 20,
    }
    after = {
        "calls": {"evalsha": 30, "info": 6, "get": 11, "publish": 40},
        "net_input_bytes": 5000,
        "net_output_bytes": 2500,
        "reads_processed": 52,
    }
    got = redis_between(before, after, changes=10)
    assert got is not None
    assert got["by_command"] == {"publish": 40, "evalsha": 20, "get": 10}
    pc = got["per_change"]
    assert pc["round_trips"] == 3.0  # 32 reads, 2 of them the INFO readings
    assert pc["commands"] == 7.0 and pc["scripts"] == 2.0 and pc["publish"] == 4.0
    assert pc["bytes_in"] == 400 and pc["bytes_out"] == 200


def _ticking_workers(url: str, metric: str = "paylive_loop_lag_seconds") -> set[int]:
    page = httpx.get(url + "/metrics", timeout=5).text
    found = re.findall(metric + r'_count\{worker="(\d+)"\} (\S+)', page)
    return {int(pid) for pid, count in found if float(count) > 0}


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """Two workers on a Redis of their own, ticking every 5 ms; shared by the tests
    below, which only read from them (starting them was most of each test's time)."""
    redis = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        env = {**BENCH_ENV, "PAYLIVE_REDIS_URL": redis.url + "/0"}
        with Server({**env, "PAYLIVE_LOOP_LAG_INTERVAL_MS": "5"}, workers=2) as srv:
            yield srv, redis.url
    finally:
        redis.stop()


@pytest.mark.anyio
async def test_each_worker_exposes_its_own_loop_lag(two_workers: tuple[Server, str]) -> None:
    srv, _ = two_workers
    assert srv.proc is not None
    pids = await until(lambda: (got := _ticking_workers(srv.url)) and len(got) == 2 and got)
    # The same ticks, less each worker's wait for a core (Linux's schedstat).
    own = _ticking_workers(srv.url, "paylive_loop_lag_own_seconds")
    assert srv.proc.pid not in pids  # the workers, not the supervisor
    assert own == pids


def test_zero_turns_the_loop_lag_timer_off() -> None:
    with Server({"PAYLIVE_LOOP_LAG_INTERVAL_MS": "0"}) as srv:
        assert _ticking_workers(srv.url) == set()


def test_a_load_run_reports_loop_lag_and_redis_per_change(
    two_workers: tuple[Server, str], tmp_path: Path
) -> None:
    srv, redis_url = two_workers
    out = tmp_path / "load.json"
    done = run(
        [
            "--url",
            srv.url,
            "--api-key",
            API_KEY,
            "--sockets",
            "40",
            "--rate",
            "40",
            "--duration",
            "1",
            "--processes",
            "1",
            "--redis-url",
            redis_url,
            "--server-pid",
            str(srv.proc.pid if srv.proc else 0),
            "--out",
            str(out),
        ]  # fmt: skip
    )
    log = srv.log()
    assert done.returncode == 0, done.stdout + done.stderr + log
    assert "loop lag ms" in done.stdout and "Redis per change" in done.stdout
    result = json.loads(out.read_text())
    # The workers wait for their sockets between changes, so each gave up its core many
    # times in a second of drive: the switches come from /proc with the CPU.
    switches = result["server"]["drive_switches"]
    assert switches["voluntary"] > 0 and switches["involuntary"] >= 0, result["server"]
    lag = result["loop_lag"]
    assert len(lag["workers"]) == 2
    for worker in lag["workers"].values():
        # A second of drive (and the second before it) at one tick per 5 ms: hundreds of
        # ticks each on a quiet machine, a few when the workers wait for a core; some
        # in any case.
        assert worker["ticks"] >= 2
        assert worker["p99_ms"] is None or worker["p99_ms"] > 0
    per = result["redis"]["per_change"]
    ok = result["changes"]["ok"]
    assert ok > 0 and result["redis"]["changes"] == ok
    # Every change is at least one saving script with its publishes, on its own read.
    assert per["round_trips"] >= 1 and per["scripts"] >= 1 and per["publish"] >= 1
    assert per["commands"] > per["round_trips"]  # the scripts' own commands count too
    assert per["bytes_in"] > 0 and per["bytes_out"] > 0


def test_a_load_run_reads_the_metrics_token_from_its_file(tmp_path: Path) -> None:
    """The server takes PAYLIVE_METRICS_TOKEN_FILE as it takes every secret's file;
    ``paylive load`` read only PAYLIVE_METRICS_TOKEN, sent the admin token instead, got
    401 and reported no loop lag. The file holds a rotation, newest first."""
    token = "new-metrics-token-0123456789"
    env = {**BENCH_ENV, "PAYLIVE_LOOP_LAG_INTERVAL_MS": "5", "PAYLIVE_METRICS_TOKEN": token}
    token_file = tmp_path / "metrics_token"
    token_file.write_text(f"{token}\nold-metrics-token-0123456789\n")
    out = tmp_path / "load.json"
    args = ["--url", "", "--api-key", API_KEY, "--sockets", "10", "--rate", "20",
            "--duration", "1", "--processes", "1", "--out", str(out)]  # fmt: skip
    with Server(env) as srv:
        args[1] = srv.url
        done = run(args, extra={"PAYLIVE_METRICS_TOKEN_FILE": str(token_file)})
        log = srv.log()
    assert done.returncode == 0, done.stdout + done.stderr + log
    result = json.loads(out.read_text())
    assert "loop_lag" in result, sorted(result)
    assert "loop lag ms" in done.stdout
