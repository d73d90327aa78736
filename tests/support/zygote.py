"""``python -m paylive ...`` without paying its imports each time: a forking zygote.

A test server's start was mostly Python importing uvicorn, Starlette, Redis and
paylive (about 0.18 of its 0.26 CPU-seconds on the 2-core machine), and the suite
starts about 170 of them. Each test process keeps one small zygote (started at its
first server) that has imported them once; every start is a ``fork`` of it, and the
child then does what ``python -m paylive <args>`` does: its own environment, working
directory and output file, the signal handlers a new interpreter has, ``__main__``
run as the module ``paylive.__main__`` (so that ``--workers``' spawned processes see
``python -m paylive`` and import nothing more of ours), atexit handlers at its end.

The zygote stays single-threaded with no event loop; it reaps its children and hands
each one's exit status back (``Child``: ``subprocess.Popen``'s interface, a signal's
death negative). The modules it imports read no environment at import time: a
variable that one of them reads then (``PROMETHEUS_MULTIPROC_DIR``) makes the start a
plain ``subprocess.Popen``. ``random`` reseeds itself in a forked child.

Run as a script, this file is the zygote; imported, ``spawn`` is its client.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    # Run as a file, Python put this directory first on the path: the zygote's imports
    # must not find the tests' own modules there.
    sys.path[0] = os.getcwd()

import atexit
import json
import select
import signal
import socket
import subprocess
import tempfile
import threading
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

# What the zygote imports once: the modules every ``paylive serve`` imports (checked
# with ``python -X importtime``), and both engines'.
PRELOAD = (
    "paylive.server.cli",
    "paylive.server.connections",
    "paylive.server.websocket",
    "paylive.server.uvicorn",
    "paylive.server.app",
    "paylive.engine.memory",
    "paylive.engine.redis",
    "uvicorn.loops.uvloop",
    "uvicorn.protocols.http.httptools_impl",
    "uvicorn.protocols.websockets.wsproto_impl",
    "uvicorn.protocols.websockets.websockets_impl",
    "uvicorn.lifespan.on",
)
# Read at import by a preloaded module: a start whose environment differs from the
# zygote's here runs in a new interpreter instead.
READ_AT_IMPORT = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")
MESSAGE = 1 << 20


# The zygote ---------------------------------------------------------------------------


def _exit_code(code: object) -> int:
    """The exit status Python gives ``raise SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _child(request: dict[str, Any], log_fd: int) -> None:
    """In the forked child: become ``python -m paylive <args>``; never returns."""
    code: object = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        # The zygote's socket, its wake-up pipe, the other children's status pipes.
        os.closerange(3, 1 << 16)
        cwd = str(request["cwd"])
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[0] = cwd
        sys.argv = ["-m", *request["args"]]
        import runpy

        # What ``python -m paylive`` runs: paylive/__main__.py as __main__, with its
        # spec (multiprocessing's spawn then imports nothing for __main__).
        runpy._run_module_as_main("paylive", alter_argv=True)  # type: ignore[attr-defined]
        code = 0
    except SystemExit as exc:
        code = exc.code
    except BaseException:
        traceback.print_exc()
        code = 1
    status = 1
    try:
        status = _exit_code(code)
        atexit._run_exitfuncs()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
    finally:
        os._exit(status)


def _serve(sock: socket.socket) -> None:
    """The zygote's loop: fork a child per request, hand back its exit status."""
    for name in PRELOAD:
        __import__(name)
    assert threading.active_count() == 1, threading.enumerate()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    status_of: dict[int, int] = {}  # child pid -> the write end of its status pipe

    def reap() -> None:
        while status_of:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                return
            write = status_of.pop(pid, None)
            if write is not None:
                try:
                    os.write(write, b"%d\n" % os.waitstatus_to_exitcode(status))
                except BrokenPipeError:
                    pass  # its handle was let go before it ended
                os.close(write)

    sock.send(b"ready")
    while True:
        ready, _, _ = select.select([sock.fileno(), wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 4096)
            reap()
        if sock.fileno() not in ready:
            continue
        message, fds, _, _ = socket.recv_fds(sock, MESSAGE, 2)
        if not message:
            break
        log_fd, status_w = fds
        pid = os.fork()
        if pid == 0:
            _child(json.loads(message), log_fd)
        os.close(log_fd)
        status_of[pid] = status_w
        sock.send(b"%d" % pid)
    # The test process ended: its servers go with it.
    for pid in status_of:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    while status_of:
        pid, _ = os.waitpid(-1, 0)
        status_of.pop(pid, None)


# The client ---------------------------------------------------------------------------


class Child:
    """A process the zygote forked, as much of ``subprocess.Popen`` as the tests use."""

    def __init__(self, pid: int, status: int, args: Sequence[str]) -> None:
        self.pid = pid
        self.args = list(args)
        self.returncode: int | None = None
        self._status = status
        self._lock = threading.Lock()

    def _collect(self, timeout: float | None) -> int | None:
        if self.returncode is None:
            ready, _, _ = select.select([self._status], [], [], timeout)
            if ready:
                with self._lock:
                    if self.returncode is None:
                        text = os.read(self._status, 64)
                        if not text:
                            # No status: the zygote itself died. Its child, if it runs
                            # on, could never be waited for: it is ended here.
                            try:
                                os.kill(self.pid, signal.SIGKILL)
                            except ProcessLookupError:
                                pass
                        self.returncode = int(text) if text else -signal.SIGKILL
        return self.returncode

    def poll(self) -> int | None:
        return self._collect(0)

    def wait(self, timeout: float | None = None) -> int:
        code = self._collect(timeout)
        if code is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __del__(self) -> None:
        try:
            os.close(self._status)
        except OSError:
            pass


class _Zygote:
    def __init__(self) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.errors = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.errors,
        )
        theirs.close()
        if self.sock.recv(16) != b"ready":
            self.proc.wait(10)
            self.errors.seek(0)
            raise RuntimeError(f"the zygote did not start:\n{self.errors.read().decode()}")

    def spawn(self, args: Sequence[str], env: Mapping[str, str], log_fd: int) -> Child:
        request = {"args": list(args), "env": dict(env), "cwd": os.getcwd()}
        status_r, status_w = os.pipe()
        try:
            socket.send_fds(self.sock, [json.dumps(request).encode()], [log_fd, status_w])
        finally:
            os.close(status_w)
        pid = self.sock.recv(16)
        if not pid:
            os.close(status_r)
            raise RuntimeError("the zygote exited")
        return Child(int(pid), status_r, [sys.executable, "-m", "paylive", *args])

    def close(self) -> None:
        # Waited for, so that its CPU and its children's count in the test process's.
        self.sock.close()
        self.proc.wait(30)


_lock = threading.Lock()
_zygotes: dict[int, _Zygote] = {}  # by the test process's pid


def _close() -> None:
    zygote = _zygotes.pop(os.getpid(), None)
    if zygote is not None:
        zygote.close()


def spawn(
    args: Sequence[str], env: Mapping[str, str], stdout: int
) -> Child | subprocess.Popen[bytes]:
    """``python -m paylive *args`` with ``env``, its stdout and stderr to the file
    descriptor ``stdout``, forked from this process's zygote."""
    forked = os.environ.get("PAYLIVE_TEST_ZYGOTE", "1") != "0"  # 0: every start a new interpreter
    if not forked or any(env.get(name) != os.environ.get(name) for name in READ_AT_IMPORT):
        return subprocess.Popen(
            [sys.executable, "-m", "paylive", *args],
            env=env,
            stdout=stdout,
            stderr=subprocess.STDOUT,
        )
    with _lock:
        zygote = _zygotes.get(os.getpid())
        if zygote is None or zygote.proc.poll() is not None:
            if not _zygotes:
                atexit.register(_close)
            zygote = _zygotes[os.getpid()] = _Zygote()
        return zygote.spawn(args, env, stdout)


if __name__ == "__main__":
    _serve(socket.socket(fileno=int(sys.argv[1])))
