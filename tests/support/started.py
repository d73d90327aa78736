"""Several ``paylive serve`` processes of one test, started side by side.

A server spends most of its start importing (CPU, and the wait for its port to
answer); a test of two workers started them one after the other, and waited for
both starts in turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager

from .servers import Server


@contextmanager
def started(*servers: Server) -> Iterator[tuple[Server, ...]]:
    """Start ``servers`` at once; close them all (also the started ones when another
    did not start)."""
    with ExitStack() as stack:
        for server in servers:
            stack.callback(server.close)
        with ThreadPoolExecutor(len(servers)) as pool:
            for future in [pool.submit(server.start) for server in servers]:
                future.result()
        yield servers
