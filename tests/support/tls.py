"""One TLS context for the tests' httpx clients and calls.

httpx makes a new context for every client (and ``httpx.get`` makes a client),
loading the CA bundle each time: 30 to 60 ms of CPU on the 2-core CI machine, for
about 320 clients and as many polls of servers starting up in a run of the suite. The
tests speak plain HTTP to servers on loopback, so this context never takes part in a
handshake; made once per process, it is passed as ``verify``.
"""

from __future__ import annotations

import ssl

CONTEXT = ssl.create_default_context()
