"""Real ``redis-server`` processes for tests: one node, or a three-node cluster.

Every server listens on a free loopback port in a directory of its own, so tests
never touch a Redis someone else runs (and never the one on 6379). Everything here
is synchronous and bounded in time: a server that does not answer in a few seconds
fails the test instead of hanging it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .ports import free_port

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def free_cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too; Redis needs both, and
    ``free_port`` checks both, from this test process's own range."""
    return free_port()


def command(port: int, *args: str, timeout: float = 2.0) -> bytes:
    """Send one command over a fresh socket and return its raw reply.

    A tiny RESP writer, so that the helpers need no client library and no event loop.
    """
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        raw = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(raw), raw)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        reply = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
            head, sep, rest = reply.partition(b"\r\n")
            if not sep:
                continue
            # A bulk reply ($<length>) is complete once its body and CRLF are in;
            # every other reply the helpers ask for is a single line.
            if head.startswith(b"$") and int(head[1:]) >= 0:
                if len(rest) >= int(head[1:]) + 2:
                    break
                continue
            break
        return reply


class PortTaken(RuntimeError):
    """The port was free when chosen, and another process's by the time of the bind."""


def _answers(port: int) -> bool:
    try:
        return command(port, "PING", timeout=0.5).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class RedisProc:
    """One ``redis-server`` on 127.0.0.1:``port`` with its files in ``directory``."""

    port: int
    directory: Path
    appendonly: bool = False
    cluster: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start (or restart, on the same port and files) and wait until it answers."""
        if REDIS_SERVER is None:
            raise RuntimeError("redis-server is not on PATH")
        if self.running:
            return
        # Absolute: the server runs in this folder, and reads --dir from there.
        self.directory = self.directory.resolve()
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--logfile", "redis.log",
            "--daemonize", "no",
        ]  # fmt: skip
        if self.cluster:
            args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
        self.process = subprocess.Popen(
            args, cwd=self.directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.directory / "redis.log"
                said = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
                raise RuntimeError(f"redis-server exited at start:\n{said}")
            # PING answers -LOADING while the append-only file is replayed, so a
            # +PONG means the data is back, not only that the port is open.
            if _answers(self.port):
                if self._answered_by_ours():
                    return
                # Another test run's server holds the port: ours cannot bind it.
                self.stop()
                raise PortTaken(f"port {self.port} is another redis-server's")
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"redis-server on port {self.port} did not answer in time")

    def _answered_by_ours(self) -> bool:
        info = command(self.port, "INFO", "server", timeout=2.0)
        pid = re.search(rb"process_id:(\d+)", info)
        return self.process is not None and pid is not None and int(pid[1]) == self.process.pid

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM lets it flush its append-only file) and wait, bounded."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGCONT)  # a paused server cannot handle SIGTERM
                proc.send_signal(sig)
                proc.wait(timeout=STOP_TIMEOUT_S)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
        self.process = None

    def pause(self) -> None:
        """Freeze it with SIGSTOP: connections stay open but nothing answers."""
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)

    def flushall(self) -> None:
        command(self.port, "FLUSHALL")


def start_redis(directory: Path, *, appendonly: bool = False) -> RedisProc:
    """A new single-node server on a free port, files under ``directory``."""
    for attempt in range(3):
        proc = RedisProc(port=free_port(), directory=directory, appendonly=appendonly)
        try:
            proc.start()
            return proc
        except PortTaken:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


@dataclass
class RedisClusterProc:
    """Three primaries, no replicas, every slot covered."""

    nodes: list[RedisProc]

    @property
    def url(self) -> str:
        """The URL of one node, flagged so that the engine uses the cluster client."""
        return f"{self.nodes[0].url}?cluster=1"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def flushall(self) -> None:
        for node in self.nodes:
            node.flushall()

    def announce(self, ports: list[int]) -> None:
        """Have node ``i`` tell clients it is at ``ports[i]`` (a proxy in front of it),
        and wait until every node's map says so. The cluster bus keeps the real ports."""
        for node, port in zip(self.nodes, ports, strict=True):
            command(node.port, "CONFIG", "SET", "cluster-announce-port", str(port))
        wanted = [f":{port}@".encode() for port in ports]
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            maps = [command(node.port, "CLUSTER", "NODES") for node in self.nodes]
            if all(port in held for held in maps for port in wanted):
                return
            time.sleep(0.05)
        raise RuntimeError("the nodes did not learn the announced ports in time")


def start_cluster(directory: Path, size: int = 3) -> RedisClusterProc:
    """Start ``size`` cluster-enabled servers and join them with ``redis-cli --cluster``."""
    if REDIS_CLI is None:
        raise RuntimeError("redis-cli is not on PATH")
    nodes: list[RedisProc] = []
    cluster = RedisClusterProc(nodes)
    try:
        for index in range(size):
            node = RedisProc(
                port=free_cluster_port(), directory=directory / f"node{index}", cluster=True
            )
            node.start()
            nodes.append(node)
        subprocess.run(
            [REDIS_CLI, "--cluster", "create"]
            + [f"127.0.0.1:{node.port}" for node in nodes]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=30,
        )
        # `--cluster create` returns once slots are assigned; every node must also
        # agree that the cluster is up before keyed commands stop answering CLUSTERDOWN.
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if all(b"cluster_state:ok" in command(node.port, "CLUSTER", "INFO") for node in nodes):
                return cluster
            time.sleep(0.05)
        raise RuntimeError("the cluster did not reach cluster_state:ok in time")
    except BaseException:
        cluster.stop()
        raise
