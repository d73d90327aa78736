"""The servers the benchmark compares, each started fresh on 127.0.0.1 with its own Redis.

Every server listens on a free loopback port; every Redis is a ``redis-server`` of the
run's own on a free port (``tests/support/redisproc.py``), never the one on 6379.
Starting and stopping are bounded in time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tests.support.ports import free_port
from tests.support.redisproc import RedisProc, start_redis

ROOT = Path(__file__).resolve().parent.parent  # the repository: servers start here
API_KEY = "bench-api-key-0123456789"
ADMIN_TOKEN = "bench-admin-token-0123456789"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
PEER_WORKER = (sys.executable, "-m", "bench.peer.client")

# As BENCHMARKS.md has always run paylive: an attempt never times out by itself and a
# retry is allowed at once, so only the generator changes states.
PAYLIVE_ENV = {
    "PAYLIVE_API_KEY": API_KEY,
    "PAYLIVE_ADMIN_TOKEN": ADMIN_TOKEN,
    "PAYLIVE_SECRET": "bench-secret-0123456789abc",
    "PAYLIVE_WEBHOOK_SECRET": "bench-webhook-0123456789",
    "PAYLIVE_MAX_ATTEMPTS": "20",
    "PAYLIVE_RETRY_DELAY_MS": "0",
    "PAYLIVE_ATTEMPT_TIMEOUT_MS": "600000",
    # The idle runs hold up to 20,000 sockets, which may land unevenly on two workers:
    # lift the per-worker connection bound (10,000 by default) above that.
    "PAYLIVE_MAX_CONNECTIONS": "25000",
    # The generator's pages do not acknowledge outcomes: no session.outcome_unseen
    # two minutes after a session ends, an event no socket is left to receive.
    "PAYLIVE_OUTCOME_UNSEEN_MS": "0",
}


@dataclass(frozen=True)
class System:
    name: str
    label: str
    kind: Literal["paylive", "socketio"]
    workers: int
    redis: bool
    # One process may hold at most 20,000 open files here: a single worker cannot
    # hold 20,000 sockets.
    max_sockets: int

    @property
    def worker_argv(self) -> Sequence[str] | None:
        """The load generator's worker for this system (None: paylive's own)."""
        return PEER_WORKER if self.kind == "socketio" else None


SYSTEMS = {
    s.name: s
    for s in (
        System("paylive-memory", "paylive, memory, 1 worker", "paylive", 1, False, 19_000),
        # The Redis engine's own cost, apart from the cost of splitting the work over
        # two processes (each gets every admin event and half the commands).
        System("paylive-redis-1", "paylive, Redis, 1 worker", "paylive", 1, True, 19_000),
        System("paylive-redis", "paylive, Redis, 2 workers", "paylive", 2, True, 38_000),
        System(
            "socketio",
            "python-socketio + AsyncRedisManager, 2 workers",
            "socketio",
            2,
            True,
            38_000,
        ),
    )
}


@dataclass
class Running:
    system: System
    url: str
    proc: subprocess.Popen[bytes]
    redis: RedisProc | None
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def also_pids(self) -> list[int]:
        """Processes sampled apart: the system's Redis."""
        if self.redis is None or self.redis.process is None:
            return []
        return [self.redis.process.pid]


def _command(system: System, port: int) -> list[str]:
    if system.kind == "paylive":
        return [
            sys.executable, "-m", "paylive", "serve",
            "--port", str(port), "--workers", str(system.workers), "--log-level", "warning",
        ]  # fmt: skip
    return [
        sys.executable, "-m", "uvicorn", "bench.peer.app:app",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(system.workers),
        "--log-level", "warning", "--no-access-log", "--ws-per-message-deflate", "false",
    ]  # fmt: skip


def _environment(
    system: System, redis: RedisProc | None, root: Path, extra: Mapping[str, str]
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PAYLIVE_", "PEER_"))}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH")]))
    if system.kind == "paylive":
        env.update(PAYLIVE_ENV, HOST="127.0.0.1")
        env.update(extra)
        if redis is not None:
            env["PAYLIVE_REDIS_URL"] = redis.url + "/0"
    else:
        assert redis is not None
        env.update(PEER_REDIS_URL=redis.url + "/0", PEER_API_KEY=API_KEY)
        env["PEER_ADMIN_TOKEN"] = ADMIN_TOKEN
    return env


def _answers(url: str) -> bool:
    """Any HTTP answer at all (the peer answers 401 without its key)."""
    try:
        with urllib.request.urlopen(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def listening_inode(port: int) -> int | None:
    """The inode of the socket listening on 127.0.0.1:``port`` (Linux's /proc/net/tcp)."""
    local = f"0100007F:{port:04X}"
    try:
        with open("/proc/net/tcp") as table:
            for line in table:
                fields = line.split()
                if len(fields) > 9 and fields[1] == local and fields[3] == "0A":  # LISTEN
                    return int(fields[9])
    except OSError:
        pass
    return None


def accepting_workers(supervisor: int, inode: int) -> int:
    """How many of ``supervisor``'s worker processes accept on the listening socket:
    it is in their event loop's epoll set (its entry in /proc/<pid>/fdinfo names the
    socket's inode). A worker only adds it once its application has started."""
    entry = f"ino:{inode:x} "
    try:
        children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    except OSError:
        return 0
    accepting = 0
    for pid in children:
        try:
            if b"spawn_main" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            infos = list(Path(f"/proc/{pid}/fdinfo").iterdir())
        except OSError:
            continue
        for info in infos:
            try:
                text = info.read_text()
            except OSError:
                continue
            if "tfd:" in text and entry in text:
                accepting += 1
                break
    return accepting


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextmanager
def running(
    system: System, directory: Path, root: Path, extra: Mapping[str, str] | None = None
) -> Iterator[Running]:
    """``system`` started fresh (its Redis too), stopped and its Redis gone on exit;
    ``extra``: more ``PAYLIVE_*`` variables for paylive."""
    directory.mkdir(parents=True, exist_ok=True)
    redis = start_redis(directory / "redis") if system.redis else None
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = directory / "server.log"
    proc = None
    try:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                _command(system, port),
                cwd=root,
                env=_environment(system, redis, root, extra or {}),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        probe = url + ("/healthz" if system.kind == "paylive" else "/sessions/probe")
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(probe):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{system.name} did not start:\n{tail}")
            time.sleep(0.1)
        if system.workers > 1:
            # The first worker answers before the others are up: until they accept
            # too, it would take every socket of the run.
            inode = listening_inode(port)
            if inode is None:
                time.sleep(2.0)  # no /proc/net/tcp to go by: give them the time
            while inode is not None and accepting_workers(proc.pid, inode) < system.workers:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log_path.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"{system.name}: not every worker accepts:\n{tail}")
                time.sleep(0.05)
        yield Running(system, url, proc, redis, log_path)
    finally:
        if proc is not None:
            _stop(proc)
        if redis is not None:
            redis.stop()
