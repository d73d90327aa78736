"""``paylive load --restart-pid``: one of two workers on Redis is sent SIGTERM while
300 sockets watch sessions changing 100 times a second. Nothing is lost, and the
reconnects are spread over the 6 s drain window instead of one second
(docs/protocol.md section 4.3).

The size: the stopped worker holds about 150 sockets, so an even spread is about 25
reconnects a second (a sixth of them), and the busiest second's bar, twice that
share, is several standard deviations above it (busiest seconds of 0.18 to 0.21 were
seen on a 2-core machine at a load average of 9), while closing them all at once
would put at least half in one second (a reconnect waits at most 1.2 s). A server
starved for a second bunches a sixth of the closes; the hint still spreads them
under the bar.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

from bench.systems import accepting_workers, listening_inode

from ..support.redisproc import start_redis
from ..support.servers import ADMIN_TOKEN, API_KEY, Server
from ..support.waiting import until
from .test_load import BENCH_ENV

pytestmark = pytest.mark.anyio

WINDOW_MS = 6_000  # shorter than the default 10 s, long enough for a spread to show
SOCKETS = 300  # the stopped worker holds about 150: 25 a second if spread evenly
RESTART_AFTER_S = 1  # into the drive: every socket is open before the drive starts
# The drive outlasts the window and the last reconnects' hint (a fifth of the window),
# so that changes flow all through the restart and every close comes from the server.
DRIVE_S = RESTART_AFTER_S + WINDOW_MS / 1000 * 1.2 + 0.8
RATE = 100


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
            # Both accept before the load opens its sockets: else the first to start
            # could take them all, and the one stopped might hold none.
            inode = listening_inode(srv.port)
            assert inode is not None
            await until(lambda: accepting_workers(supervisor, inode) == 2, timeout=30)
            workers = workers_of(supervisor)
            # Either worker may be stopped (the one holding more sockets now, before the
            # load: its share of the load's sockets is its own, about half).
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
                    str(RATE),
                    "--duration",
                    str(DRIVE_S),
                    "--processes",
                    "1",
                    "--drain",
                    "20",
                    "--restart-pid",
                    str(max(workers, key=sockets_held)),
                    "--restart-after",
                    str(RESTART_AFTER_S),
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
    # is: 993 events of 2,400 changes asked were seen once under the parallel suite;
    # 900 changes are asked, about 1,500 events when all are made).
    assert events["sent"] > 500, events
    assert events["lost"] == 0 and events["out_of_order"] == 0, events
    assert restart["events_lost"] == 0
    # The stopped worker held its share of the sockets; each came back once.
    assert restart["closed"] >= SOCKETS // 5, restart
    # Closed by the drain (1012); on a starved machine a few more may be closed with
    # 1013 (the remaining worker could not reach Redis in time to catch a socket up, or
    # it fell behind), and come back with since like the others.
    codes = result["sockets"]["close_codes"]
    assert set(codes) <= {"1012", "1013"}, result["sockets"]
    assert codes.get("1013", 0) <= restart["closed"] // 10, result["sockets"]
    # Every page tried to come back, and came back unless its handshake failed three
    # times (15 s each) on a starved machine; none is lost either way.
    failed = result["sockets"]["failed"]
    assert restart["reconnects"] == restart["closed"], restart
    assert restart["reconnected"] >= restart["closed"] - failed, (restart, result["sockets"])
    assert restart["reconnected"] >= restart["closed"] // 2, (restart, result["sockets"])
    # Spread: over at least half the window, no one-second bucket with over twice the
    # share of an even spread (a third at 6 s; at 8 s it was a quarter).
    assert restart["seconds_with_reconnects"] >= WINDOW_MS / 2000, restart
    assert restart["busiest_second_share"] <= 2 * 1000 / WINDOW_MS, restart
    drained = re.search(
        rf"drained {restart['closed']} sockets in (\d+) ms \(window {WINDOW_MS} ms\)", log
    )
    assert drained is not None, log[-2000:]
    # Spread over the window, not closed at once (the second half of it at least).
    assert int(drained.group(1)) >= WINDOW_MS / 2, drained.group(0)
