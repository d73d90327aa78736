"""``paylive load --restart-pid``: one of two workers on Redis is sent SIGTERM while
1,000 sockets watch sessions changing 100 times a second. Nothing is lost, and the
reconnects are spread over the drain window instead of one second
(docs/protocol.md section 4.3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from ..support.redisproc import start_redis
from ..support.servers import ADMIN_TOKEN, API_KEY, Server
from ..support.waiting import until
from .test_load import BENCH_ENV

pytestmark = pytest.mark.anyio

WINDOW_MS = 8_000  # shorter than the default 10 s; at 4 s a quarter per second is the mean
SOCKETS = 1_000  # the stopped worker holds about 500: 60 a second if spread evenly


def workers_of(supervisor: int) -> list[int]:
    """The uvicorn worker processes under ``paylive serve --workers``."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    found = []
    for pid in map(int, children):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            found.append(pid)
    return found


def sockets_held(pid: int) -> int:
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            held += os.readlink(fd).startswith("socket:")
        except OSError:
            pass
    return held


async def test_sigterm_to_one_of_two_workers_loses_nothing_and_spreads_reconnects(
    tmp_path: Path,
) -> None:
    redis = start_redis(tmp_path / "redis")
    env = {
        **BENCH_ENV,
        "PAYLIVE_REDIS_URL": redis.url,
        "PAYLIVE_DRAIN_MS": str(WINDOW_MS),
        "PAYLIVE_MAX_CONNECTIONS": "20000",
        # Every session is processing the whole run: countdowns at the default pace
        # and slower would only load the shared test machine, not the drain.
        "PAYLIVE_COUNTDOWN_INTERVAL_MS": "5000",
    }
    out = tmp_path / "load.json"
    try:
        with Server(env, workers=2) as srv:
            assert srv.proc is not None
            supervisor = srv.proc.pid
            await until(lambda: len(workers_of(supervisor)) == 2)
            workers = workers_of(supervisor)
            # The worker that holds the most sockets is stopped; the probe runs once
            # the sockets are open (3 s into the drive is well after).
            probe = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "paylive",
                    "load",
                    "--url",
                    srv.url,
                    "--api-key",
                    API_KEY,
                    "--sockets",
                    str(SOCKETS),
                    "--rate",
                    "100",
                    "--duration",
                    "12",
                    "--processes",
                    "1",
                    "--drain",
                    "20",
                    "--restart-pid",
                    str(max(workers, key=sockets_held)),
                    "--restart-after",
                    "2",
                    "--out",
                    str(out),
                ],  # fmt: skip
                env={**os.environ, "PAYLIVE_ADMIN_TOKEN": ADMIN_TOKEN},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                stdout, stderr = await anyio.to_thread.run_sync(
                    lambda: probe.communicate(timeout=240)
                )
            finally:
                probe.kill()
            assert probe.returncode == 0, stdout + stderr + srv.log()[-3000:]
            # The supervisor replaced the stopped worker.
            await until(lambda: len(workers_of(supervisor)) == 2, timeout=20)
            log = srv.log()
    finally:
        redis.stop()
    result = json.loads(out.read_text())
    restart = result["restart"]
    assert "reconnects per s" in stdout
    events = result["events"]
    # Changes flowed all through the restart (how many depends on how busy the machine
    # is: 993 of the asked 200/s were seen once under the parallel suite).
    assert events["sent"] > 500, events
    assert events["lost"] == 0 and events["out_of_order"] == 0, events
    assert restart["events_lost"] == 0
    # The stopped worker held its share of the sockets; each came back once.
    assert restart["closed"] >= 200, restart
    assert set(result["sockets"]["close_codes"]) == {"1012"}, result["sockets"]
    # Every page tried to come back. How many made it within the run depends on how
    # busy the shared machine is (a handshake gives up after 15 s, three tries): on a
    # quiet one all of them, under the parallel suite a fifth timed out; never lost.
    failed = result["sockets"]["failed"]
    assert restart["reconnects"] == restart["closed"], restart
    assert restart["reconnected"] >= restart["closed"] - failed, (restart, result["sockets"])
    assert restart["reconnected"] >= restart["closed"] // 2, (restart, result["sockets"])
    # Spread: over at least half the window, no one-second bucket with over a quarter.
    assert restart["seconds_with_reconnects"] >= WINDOW_MS / 2000, restart
    assert restart["busiest_second_share"] <= 0.25, restart
    assert f"drained {restart['closed']} sockets over {WINDOW_MS} ms" in log
