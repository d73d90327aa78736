"""``paylive load``: the load generator (docs/protocol.md section 5).

It imports nothing of the server: only the protocol's vocabulary from
``paylive.core.protocol`` and the exception root from ``paylive.errors``. The pieces,
from the command line down:

- ``cli``: the flags; ``config``: the plan, one typed ``Config`` per worker process;
- ``parent``: starts the workers, walks them through the phases, samples the server
  from /proc (``procstat``); ``report`` merges their results, ``table`` prints them;
- ``worker``: one process, wired from ``driver`` (creates sessions, fires state
  changes open loop), ``sockets`` (the customers' sockets), ``admin`` (admin feeds),
  ``poll`` (the polling baseline), ``records`` (what each session and feed saw) and
  ``accounting`` (the counters and the process's result);
- ``dialect`` (how to speak to a server over HTTP and WebSocket) and ``http`` (lean
  keep-alive HTTP clients).
"""
