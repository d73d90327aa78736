"""The test servers are forked from a zygote (tests/support/zygote.py), not started as
new interpreters: the processes the tests get must still behave as ``python -m paylive``
would, exit statuses and all, for the tests that stop, signal and wait for them."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from paylive import __version__

from ..support import zygote
from ..support.servers import Server


def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """``python -m paylive *args`` forked from the zygote: its exit status and output."""
    with tempfile.TemporaryFile() as out:
        child = zygote.spawn(args, env if env is not None else dict(os.environ), out.fileno())
        assert isinstance(child, zygote.Child)
        code = child.wait(30)
        out.seek(0)
        return code, out.read().decode()


def test_a_forked_command_exits_as_python_would() -> None:
    assert run("--version") == (0, f"paylive {__version__}\n")
    code, out = run("serve", "--workers", "0")
    assert code == 2 and "--workers must be at least 1" in out, out


def test_a_forked_command_has_its_own_environment_and_directory(tmp_path: Path) -> None:
    # A secret in a file named relative to the child's working directory, through a
    # variable the test process does not have.
    (tmp_path / "secret").write_text("zygote-secret-0123456789")
    env = {**os.environ, "PAYLIVE_SECRET_FILE": "secret"}
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        code, out = run("check", "--timeout", "5", env=env)
        os.chdir(tmp_path.parent)
        missing, said = run("check", "--timeout", "5", env=env)
    finally:
        os.chdir(cwd)
    assert code == 0, out
    assert missing == 2 and "PAYLIVE_SECRET_FILE" in said, said
    assert "PAYLIVE_SECRET_FILE" not in os.environ


def test_a_server_is_signalled_and_waited_for_as_a_popen_would_be() -> None:
    with Server() as srv:
        assert isinstance(srv.proc, zygote.Child)
        assert srv.proc.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            srv.proc.wait(0.1)
        srv.proc.kill()
        assert srv.proc.wait(10) == -signal.SIGKILL
        assert srv.proc.returncode == -signal.SIGKILL
        # Signalling a process that has ended is a no-op, as for a Popen.
        srv.proc.terminate()
    with Server() as srv:
        assert srv.stop() == -signal.SIGTERM
        assert "Finished server process" in srv.log()


def test_a_handle_dropped_unread_leaves_the_zygote_and_its_other_children() -> None:
    # A handle let go before its child ended (a Server dropped without being stopped):
    # the zygote's report of that child's end goes nowhere, and must not end the
    # zygote (nor make the other servers' handles read as ended).
    with Server() as kept:
        dropped = Server().start()
        assert dropped.proc is not None
        pid = dropped.proc.pid
        dropped.proc = None
        gc.collect()
        os.kill(pid, signal.SIGTERM)
        until_gone = Server().start()  # a fork after the report went nowhere
        until_gone.close()
        dropped.close()
        assert kept.proc is not None and kept.proc.poll() is None
        assert kept.stop() == -signal.SIGTERM
