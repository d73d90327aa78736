"""Real ``paylive serve`` processes on free loopback ports, for the tests."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

from . import tls, zygote
from .ports import free_port
from .processes import stop as stop_process

API_KEY = "test-api-key-0123456789"
ADMIN_TOKEN = "test-admin-token-0123456789"
SECRET = "test-signing-secret-0123456789"
WEBHOOK_SECRET = "test-webhook-secret-0123456789"

# Short timings so that a timeout, a retry and a countdown take about a second.
FAST = {
    "PAYLIVE_ATTEMPT_TIMEOUT_MS": "1000",
    "PAYLIVE_RETRY_DELAY_MS": "300",
    "PAYLIVE_SANDBOX_DELAY_MS": "150",
    "PAYLIVE_COUNTDOWN_INTERVAL_MS": "200",
    # A stopping server drains its sockets over this window (default 10 s).
    "PAYLIVE_DRAIN_MS": "500",
    # The parallel suite can starve a server's loop for over a second on two slow
    # cores: the default 1 s turned a few commands into engine_unavailable. A test of
    # a stalled Redis sets its own.
    "PAYLIVE_REDIS_TIMEOUT_MS": "3000",
}
# Test pages open /demo again and again from one address: lift its per-address limit
# (a test of the limit sets its own).
OPEN = {"PAYLIVE_DEMO_PER_MINUTE": "100000"}
# What uvicorn writes once it has bound its port (any log format).
BOUND = b"Uvicorn running on"


class Server:
    """One ``paylive serve`` process; its output goes to a file the tests can read."""

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        workers: int = 1,
        port: int | None = None,
        secrets: bool = True,
    ) -> None:
        # A port of our choosing may be taken by another test run before the server
        # binds it: then the server is started again on another.
        self._own_port = port is None
        self._use_port(port or free_port())
        self.workers = workers
        self._dir = tempfile.TemporaryDirectory(prefix="paylive-test-")
        self.log_path = Path(self._dir.name) / "server.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PAYLIVE_")}
        if secrets:
            self.env.update(
                PAYLIVE_API_KEY=API_KEY,
                PAYLIVE_ADMIN_TOKEN=ADMIN_TOKEN,
                PAYLIVE_SECRET=SECRET,
                PAYLIVE_WEBHOOK_SECRET=WEBHOOK_SECRET,
            )
        self.env.update(FAST)
        self.env.update(OPEN)
        self.env.update(env or {})
        # Forked from a zygote that has imported paylive (tests/support/zygote.py): the
        # same process as ``python -m paylive serve``, without its imports each time.
        self.proc: zygote.Child | subprocess.Popen[bytes] | None = None

    def _use_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> Server:
        for _ in range(3):
            if self._start_once(timeout):
                return self
            self._use_port(free_port())
        raise RuntimeError(f"server found no free port in 3 tries:\n{self.log()}")

    def _start_once(self, timeout: float) -> bool:
        """Start the server; False if its port was taken meanwhile and ours to change."""
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            self.proc = zygote.spawn(
                ["serve", "--port", str(self.port), "--workers", str(self.workers)],
                self.env,
                log.fileno(),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                if self._own_port and b"address already in use" in self._output(offset):
                    return False
                raise RuntimeError(f"server exited early:\n{self.log()}")
            # Only once uvicorn says it listens is the answer on the port this server's
            # (another test run's server may hold the port this one failed to bind).
            if BOUND in self._output(offset):
                try:
                    if (
                        httpx.get(
                            self.url + "/healthz", timeout=0.5, verify=tls.CONTEXT
                        ).status_code
                        == 200
                    ):
                        return True
                except httpx.HTTPError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start in {timeout} s:\n{self.log()}")

    def _output(self, offset: int) -> bytes:
        """What the server wrote since ``offset``."""
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return log.read()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        return stop_process(self.proc, sig, timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
