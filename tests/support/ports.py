"""Free loopback ports for the servers the tests start.

The suite runs on several processes at once (pytest-xdist). A port the kernel hands
out for ``bind(0)`` is free when asked, but nothing keeps another process from being
handed the same one before the server that asked has bound it; a server that then
fails to bind is not seen at once, and the test talks to the other process's server.
So each test process takes its ports from a range of its own, below Linux's
ephemeral range (32768 and up, where outgoing connections take theirs) and with room
for Redis Cluster's bus (the port + 10000), one after the other, skipping any that is
taken.
"""

from __future__ import annotations

import itertools
import os
import socket

# Eight ranges (pyproject runs four processes; more by -n), each bus port below 32768.
FIRST, SPAN, RANGES = 12_000, 1_300, 8


def _range() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    start = FIRST + (index % RANGES) * SPAN
    return range(start, start + SPAN)


def _ports() -> itertools.cycle[int]:
    # Several test runs share this machine (each with its gw0, gw1, ...): starting at a
    # place of this process's own in its range keeps two runs' same-named processes
    # from stepping through the same ports in step.
    ports = _range()
    start = os.getpid() % len(ports)
    return itertools.cycle([*ports[start:], *ports[:start]])


_next = _ports()


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now, from this test
    process's own range."""
    for _ in range(SPAN):
        port = next(_next)
        if _bindable(port) and _bindable(port + 10_000):
            return port
    raise RuntimeError(f"no free port in {_range()}")
