"""The parent process of ``paylive load``: starts the workers and walks them through the phases.

Between phases it samples the server's CPU and RSS from /proc (with ``--server-pid``),
which is how memory per socket and server CPU per second of drive are measured;
then it merges what the workers saw into one result (``report.merge``).
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..settings import SettingsError, secret_list
from .config import Config, LoadError, plan
from .procstat import ProcSample, machine_busy_s, raise_nofile, sample_each, sample_tree
from .progress import drive_progress
from .report import merge
from .serverstats import Reading, gc_between, lag_between, redis_between, redis_reading, scrape

PAYLIVE_WORKER = (sys.executable, "-m", "paylive.load.worker")
START_TIMEOUT_S = 60.0
DRIVE_GRACE_S = 60.0  # beyond --duration, for a worker to report its drive over
SETTLE_S = 0.5  # after a phase, before the server is sampled


class WorkerProcess:
    """One worker process: JSON lines in, JSON lines out."""

    def __init__(self, config: Config, argv: Sequence[str] = PAYLIVE_WORKER) -> None:
        self.index = config.index
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        # The first line is the configuration (the API key stays off argv).
        self._write(config.to_json())

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _write(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise LoadError(f"worker {self.index} is gone ({exc})") from None

    def send(self, message: dict[str, Any]) -> None:
        self._write(json.dumps(message))

    def expect(self, phase: str, deadline: float) -> dict[str, Any]:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LoadError(f"worker {self.index} did not finish phase {phase!r} in time")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise LoadError(
                    f"worker {self.index} exited during phase {phase!r} (code {self.proc.wait(5)})"
                )
            message: dict[str, Any] = json.loads(line)
            if message.get("phase") == phase:
                return message

    def stop(self) -> None:
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()  # EOF: the worker closes its sockets and exits
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _phase(
    workers: list[WorkerProcess], name: str, timeout: float, extra: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    for worker in workers:
        worker.send({"cmd": name, **(extra or {})})
    deadline = time.monotonic() + timeout
    return [worker.expect(name, deadline) for worker in workers]


class Sampler:
    """The server (``--server-pid``, children included) and the processes sampled apart
    (``--also-pid``, e.g. redis-server), at each named moment of the run."""

    def __init__(self, pid: int | None, also: Sequence[int]) -> None:
        self.pid, self.also = pid, list(also)
        self.server: dict[str, ProcSample | None] = {}
        self.others: dict[str, ProcSample | None] = {}

    @property
    def active(self) -> bool:
        """Whether anything is sampled at all (else the settling pauses are for nothing)."""
        return self.pid is not None or bool(self.also)

    def take(self, name: str) -> None:
        self.server[name] = sample_tree(self.pid)
        if self.also:
            self.others[name] = sample_each(self.also)


class Restart:
    """``--restart-pid``: SIGTERM to one server worker, ``after`` seconds into the drive."""

    def __init__(self, pid: int, after: float) -> None:
        if pid <= 1 or not 0 <= after <= 3600:
            raise LoadError("--restart-pid must name a process, --restart-after 0 to 3600 s")
        try:
            os.kill(pid, 0)
        except OSError as exc:
            raise LoadError(f"--restart-pid {pid}: no such process ({exc})") from None
        self.pid, self.after = pid, after
        self.signal_at: float | None = None
        self._timer: threading.Timer | None = None

    def arm(self, start: float) -> None:
        """Signal at ``start + after`` (epoch s)."""
        self._timer = threading.Timer(max(0.0, start + self.after - time.time()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        self.signal_at = time.time()
        try:
            os.kill(self.pid, signal.SIGTERM)
        except OSError:
            self.signal_at = None  # gone already: nothing was restarted

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def report(self) -> dict[str, Any] | None:
        if self.signal_at is None:
            return None
        return {"pid": self.pid, "after_s": self.after, "signal_at": self.signal_at}


def _rusage_s() -> tuple[float, float]:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + kids.ru_utime, own.ru_stime + kids.ru_stime


def execute(
    args: argparse.Namespace,
    log: Callable[[str], None] | None = None,
    worker_argv: Sequence[str] = PAYLIVE_WORKER,
) -> dict[str, Any]:
    """Run the load; the merged result (see ``report.merge``). ``worker_argv`` starts a
    worker process (another target's worker speaks the same phases)."""
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    configs = plan(args)
    # /metrics may ask for its own token (PAYLIVE_METRICS_TOKEN or its file, read as
    # the server reads them; the first entry is the newest while it is rotated); else
    # the admin token.
    base_url = configs[0].base_url
    try:
        listed = secret_list("PAYLIVE_METRICS_TOKEN", os.environ)
    except SettingsError as exc:
        raise LoadError(str(exc)) from None
    token = listed[0] if listed else configs[0].admin_token
    restart_pid = getattr(args, "restart_pid", None)
    restart = None
    if restart_pid is not None:
        restart = Restart(int(restart_pid), float(getattr(args, "restart_after", 2.0)))
    raise_nofile()
    sampler = Sampler(getattr(args, "server_pid", None), getattr(args, "also_pid", None) or ())
    sampler.take("start")
    # The pause lets the server's allocations settle before it is sampled: with nothing
    # sampled, it would only lengthen the run.
    settle_s = SETTLE_S if sampler.active else 0.0
    sockets = int(args.sockets)
    setup_timeout = 60 + sockets / 100
    user0, sys0 = _rusage_s()
    wall0 = time.monotonic()
    workers = [WorkerProcess(c, worker_argv) for c in configs]
    results: list[dict[str, Any]] = []
    redis_url: str | None = getattr(args, "redis_url", None)
    lag0: Reading | None = None
    lag1: Reading | None = None
    redis0: dict[str, Any] | None = None
    redis1: dict[str, Any] | None = None
    timings: dict[str, float] = {}
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        for worker in workers:
            worker.expect("ready", deadline)
        if any(c.admins for c in configs):
            _phase(workers, "admins", 60)
        t = time.monotonic()
        created = _phase(workers, "create", setup_timeout)
        timings["create_s"] = time.monotonic() - t
        total = sum(m["created"] for m in created)
        say(f"created {total} sessions in {timings['create_s']:.1f} s")
        if total == 0:
            errors = [m["errors"] for m in created]
            raise LoadError(
                f"could not create a single session (errors: {errors}); is --url right?"
            )
        time.sleep(settle_s)
        sampler.take("sessions")
        t = time.monotonic()
        opened = _phase(workers, "open", setup_timeout)
        timings["open_s"] = time.monotonic() - t
        if configs[0].mode == "ws":
            say(f"opened {sum(m['opened'] for m in opened)} sockets in {timings['open_s']:.1f} s")
        time.sleep(settle_s)
        sampler.take("sockets")
        # The readings before the drive are taken before its start is set: on a busy
        # machine they once took longer than the second's lead, and the drive's first
        # sample came after a one-second drive had ended (no CPU seen at all).
        lag0 = scrape(base_url, token)
        redis0 = redis_reading(redis_url) if redis_url else None
        start = time.time() + 1.0
        for worker in workers:
            worker.send({"cmd": "go", "start": start})
        if restart is not None:
            restart.arm(start)
        duration = float(args.duration)
        say(f"driving {args.rate:g} changes/s for {duration:g} s")
        time.sleep(max(0.0, start - time.time()))
        sampler.take("drive_start")
        busy0, busy_at0 = machine_busy_s(), time.monotonic()
        deadline = time.monotonic() + duration + DRIVE_GRACE_S
        label = f"driving {args.rate:g}/s on {sockets} {'sockets' if configs[0].mode == 'ws' else 'clients'}"
        with drive_progress(duration, label, getattr(args, "progress", None)):
            for worker in workers:
                worker.expect("drove", deadline)
        sampler.take("drove")
        lag1 = scrape(base_url, token)
        redis1 = redis_reading(redis_url) if redis_url else None
        busy1 = machine_busy_s()
        if busy0 is not None and busy1 is not None:
            timings["machine_busy_cores"] = (busy1 - busy0) / (time.monotonic() - busy_at0)
        deadline = time.monotonic() + 90 + sockets / 100
        results = [worker.expect("done", deadline)["result"] for worker in workers]
        sampler.take("end")
    finally:
        if restart is not None:
            restart.cancel()
        for worker in workers:
            worker.stop()
    user1, sys1 = _rusage_s()
    generator = {"user_s": user1 - user0, "sys_s": sys1 - sys0, "wall_s": time.monotonic() - wall0}
    restarted = restart.report() if restart is not None else None
    out = merge(args, configs, results, sampler, generator, timings, restarted)
    lag = lag_between(lag0.lag if lag0 else None, lag1.lag if lag1 else None)
    if lag is not None:
        out["loop_lag"] = lag
    own = lag_between(lag0.own if lag0 else None, lag1.own if lag1 else None)
    if own is not None:
        out["loop_lag_own"] = own
    collections = gc_between(lag0, lag1)
    if collections is not None:
        out["gc"] = collections
    if redis_url:
        out["redis"] = redis_between(redis0, redis1, out["changes"]["ok"])
    return out
