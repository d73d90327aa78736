"""``paylive load``: the load generator of docs/protocol.md section 5.

The parent process plans the run, starts worker processes (``paylive.load.worker``,
about one per 2,500 sockets, since a process may hold at most 20,000 open files
here), and walks them through the phases together: open the admin feeds, create
the sessions, open the sockets, drive the state changes. Between phases it samples
the server's CPU and RSS from /proc (with ``--server-pid``), which is how memory
per socket and server CPU per second of drive are measured. Then it merges what
the workers saw into one table and, with ``--out``, one JSON document.

Two modes share the same driver (one state change per command, open loop):
``ws`` holds a customer socket per session; ``poll`` is the older design this
server replaces, where each page GETs its session every 2 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ..errors import PayliveError
from .report import merge, render_table
from .worker import raise_nofile

SOCKETS_PER_PROCESS = 2_500
OPEN_FILES_HARD = 20_000
MAX_RATE = 100_000
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Every flag of ``paylive load``; the CLI and ``python -m paylive.load`` share them."""
    parser.add_argument("--url", required=True, help="the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--api-key", required=True, help="the merchant API key")
    parser.add_argument(
        "--sockets", type=int, default=100, help="customer sockets (poll mode: clients)"
    )
    parser.add_argument(
        "--rate", type=float, default=50.0, help="state changes per second (0: none)"
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of driving")
    parser.add_argument("--admins", type=int, default=0, help="admin feeds (need --admin-token)")
    parser.add_argument(
        "--admin-token",
        default=None,
        help="the admin token (default: PAYLIVE_ADMIN_TOKEN from the environment)",
    )
    parser.add_argument("--format", choices=["json", "msgpack"], default="json")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help=f"client processes (default: one per {SOCKETS_PER_PROCESS} sockets)",
    )
    parser.add_argument(
        "--mode",
        choices=["ws", "poll"],
        default="ws",
        help="ws: a socket per session; poll: GET each session every --poll-interval",
    )
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=256,
        help="state-change requests in flight per process, at most",
    )
    parser.add_argument(
        "--server-pid",
        type=int,
        default=None,
        help="sample this process's CPU and RSS (and its children's) from /proc",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=5.0,
        help="seconds to wait for the last events after the drive",
    )
    parser.add_argument(
        "--http-client",
        choices=["raw", "httpx"],
        default="raw",
        help="raw: a lean keep-alive HTTP/1.1 client (default; much less CPU); httpx: for comparison",
    )
    parser.add_argument(
        "--allow-remote", action="store_true", help="allow a --url that is not a loopback address"
    )


class LoadError(PayliveError):
    """The run cannot start or a worker failed; the message says which."""


# The server, seen from /proc ------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    at: float
    cpu_s: float
    rss_kb: int

    def as_dict(self) -> dict[str, float]:
        return {"cpu_s": round(self.cpu_s, 3), "rss_mb": round(self.rss_kb / 1024, 1)}


def machine_busy_s() -> float | None:
    """CPU seconds all cores spent busy since boot (/proc/stat), to tell how much of the
    machine other processes took during a run: benchmarks on a shared box are noisy."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.extend(int(x) for x in fh.read().split())
    except OSError:
        pass
    return found


def _stat(pid: int) -> tuple[float, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as fh:
            rss = next((int(line.split()[1]) for line in fh if line.startswith("VmRSS:")), 0)
    except (OSError, IndexError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    # Fields 14 and 15 of stat (utime, stime), counted after the ")" that ends the name.
    return (int(fields[11]) + int(fields[12])) / ticks, rss


def sample_server(pid: int | None) -> ProcSample | None:
    """CPU seconds and RSS of ``pid`` plus its children (uvicorn workers), or None."""
    if pid is None:
        return None
    own = _stat(pid)
    if own is None:
        return None
    cpu, rss = own
    for child in _children(pid)[:64]:
        stat = _stat(child)
        if stat is not None:
            cpu += stat[0]
            rss += stat[1]
    return ProcSample(time.monotonic(), cpu, rss)


# Planning --------------------------------------------------------------------------------------


def check_target(url: str, allow_remote: bool) -> tuple[str, str]:
    """The base HTTP URL and the WebSocket URL; refuses non-loopback hosts unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadError(f"--url must look like http://127.0.0.1:8000, got {url!r}")
    if parts.hostname not in LOOPBACK and not allow_remote:
        raise LoadError(
            f"refusing to load {parts.hostname}: only loopback targets (127.0.0.1, localhost, ::1) "
            "unless --allow-remote is given"
        )
    base = f"{parts.scheme}://{parts.netloc}"
    ws = ("wss" if parts.scheme == "https" else "ws") + f"://{parts.netloc}"
    return base, ws


def split(total: int | float, parts: int) -> list[Any]:
    """``total`` spread over ``parts`` as evenly as possible (ints stay ints)."""
    if isinstance(total, int):
        return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
    return [total / parts] * parts


def plan(args: argparse.Namespace) -> list[dict[str, Any]]:
    base, ws = check_target(args.url, bool(getattr(args, "allow_remote", False)))
    sockets, admins = int(args.sockets), int(args.admins or 0)
    rate, duration = float(args.rate), float(args.duration)
    if sockets < 1:
        raise LoadError("--sockets must be at least 1")
    if admins < 0 or not 0 <= rate <= MAX_RATE or not 0 < duration <= 3600:
        raise LoadError(
            f"--admins must not be negative, --rate is 0 to {MAX_RATE:,}, --duration 0 to 3600 s"
        )
    token = getattr(args, "admin_token", None) or os.environ.get("PAYLIVE_ADMIN_TOKEN")
    if admins and not token:
        raise LoadError("--admins needs --admin-token (or PAYLIVE_ADMIN_TOKEN)")
    processes = args.processes or max(1, math.ceil((sockets + admins) / SOCKETS_PER_PROCESS))
    if not 1 <= processes <= min(64, sockets):
        raise LoadError("--processes must be from 1 to 64, and no more than --sockets")
    mode = getattr(args, "mode", "ws") or "ws"
    concurrency = int(getattr(args, "concurrency", 256) or 256)
    if not 1 <= concurrency <= 4096:
        raise LoadError("--concurrency must be from 1 to 4096")
    if mode == "ws" and math.ceil(sockets / processes) + concurrency + 100 > OPEN_FILES_HARD - 500:
        raise LoadError(
            f"{math.ceil(sockets / processes)} sockets per process is too many for the "
            f"{OPEN_FILES_HARD}-file limit; use more --processes"
        )
    http_client = getattr(args, "http_client", None) or "raw"
    if http_client == "raw" and base.startswith("https:"):
        raise LoadError("the raw HTTP client speaks plain http; add --http-client httpx for https")
    poll_interval = float(getattr(args, "poll_interval", 2.0) or 2.0)
    if not 0.1 <= poll_interval <= 60:
        raise LoadError("--poll-interval must be from 0.1 to 60 s")
    configs = []
    for index, (n, a, r) in enumerate(
        zip(
            split(sockets, processes), split(admins, processes), split(rate, processes), strict=True
        )
    ):
        configs.append(
            {
                "index": index,
                "base_url": base,
                "ws_url": ws,
                "api_key": args.api_key,
                "admin_token": token,
                "sockets": n,
                "admins": a,
                "rate": r,
                "duration": duration,
                "format": args.format,
                "mode": mode,
                "concurrency": concurrency,
                "poll_interval": poll_interval,
                # A browser polls over its own connection; a pool this size keeps the
                # generator's connection count sane while still spreading the load.
                "poll_connections": max(8, min(256, n // 4)),
                "drain": float(getattr(args, "drain", 5.0) or 5.0),
                "max_replacements": max(10, int(r * duration)),
                "report_finals": admins > 0,
                "http_client": http_client,
            }
        )
    return configs


# Worker processes ------------------------------------------------------------------------------


class WorkerProcess:
    """One ``python -m paylive.load.worker``: JSON lines in, JSON lines out."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.index = config["index"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "paylive.load.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        self.send(config)  # the first line is the configuration (the API key stays off argv)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(message) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise LoadError(f"worker {self.index} is gone ({exc})") from None

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


def execute(args: argparse.Namespace, log: Any = None) -> dict[str, Any]:
    """Run the load; the merged result (see ``load_report.merge``)."""
    say = log or (lambda text: print(text, file=sys.stderr, flush=True))
    configs = plan(args)
    raise_nofile()
    pid = getattr(args, "server_pid", None)
    samples: dict[str, ProcSample | None] = {"start": sample_server(pid)}
    sockets = int(args.sockets)
    setup_timeout = 60 + sockets / 100
    rusage_self0 = resource.getrusage(resource.RUSAGE_SELF)
    rusage_kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall0 = time.monotonic()
    workers = [WorkerProcess(c) for c in configs]
    results: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    try:
        deadline = time.monotonic() + 60
        for worker in workers:
            worker.expect("ready", deadline)
        if any(c["admins"] for c in configs):
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
        time.sleep(0.5)  # let the server's allocations settle before sampling
        samples["sessions"] = sample_server(pid)
        t = time.monotonic()
        opened = _phase(workers, "open", setup_timeout)
        timings["open_s"] = time.monotonic() - t
        if configs[0]["mode"] == "ws":
            say(f"opened {sum(m['opened'] for m in opened)} sockets in {timings['open_s']:.1f} s")
        time.sleep(0.5)
        samples["sockets"] = sample_server(pid)
        start = time.time() + 1.0
        for worker in workers:
            worker.send({"cmd": "go", "start": start})
        duration = float(args.duration)
        say(f"driving {args.rate:g} changes/s for {duration:g} s")
        time.sleep(max(0.0, start - time.time()))
        samples["drive_start"] = sample_server(pid)
        busy0, busy_at0 = machine_busy_s(), time.monotonic()
        deadline = time.monotonic() + duration + 60
        for worker in workers:
            worker.expect("drove", deadline)
        samples["drove"] = sample_server(pid)
        busy1 = machine_busy_s()
        if busy0 is not None and busy1 is not None:
            timings["machine_busy_cores"] = (busy1 - busy0) / (time.monotonic() - busy_at0)
        deadline = time.monotonic() + 90 + sockets / 100
        results = [worker.expect("done", deadline)["result"] for worker in workers]
        samples["end"] = sample_server(pid)
    finally:
        for worker in workers:
            worker.stop()
    rusage_self = resource.getrusage(resource.RUSAGE_SELF)
    rusage_kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    generator = {
        "user_s": (rusage_self.ru_utime - rusage_self0.ru_utime)
        + (rusage_kids.ru_utime - rusage_kids0.ru_utime),
        "sys_s": (rusage_self.ru_stime - rusage_self0.ru_stime)
        + (rusage_kids.ru_stime - rusage_kids0.ru_stime),
        "wall_s": time.monotonic() - wall0,
    }
    return merge(args, configs, results, samples, generator, timings)


def run_load(args: argparse.Namespace) -> int:
    """``paylive load``: run, print the table, write ``--out``; 0 when the run completed."""
    try:
        result = execute(args)
    except LoadError as exc:
        print(f"paylive load: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("paylive load: interrupted", file=sys.stderr)
        return 130
    print(render_table(result))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2, sort_keys=True)
            fh.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="paylive load", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run_load(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
