"""``paylive load``: the load generator of docs/protocol.md section 5.

The parent process plans the run (``config``), starts worker processes
(``worker``, about one per 2,500 sockets, since a process may hold at most 20,000
open files here), and walks them through the phases together (``parent``): open the
admin feeds, create the sessions, open the sockets, drive the state changes. Then
it merges what the workers saw (``report``) into one table (``table``) and, with
``--out``, one JSON document.

Two modes share the same driver (one state change per command, open loop):
``ws`` holds a customer socket per session; ``poll`` is the older design this
server replaces, where each page GETs its session every 2 s.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .config import SOCKETS_PER_PROCESS, LoadError


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
        help="the admin token (default: PAYLIVE_ADMIN_TOKEN or its _FILE, the first entry of a list)",
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
        "--also-pid",
        type=int,
        action="append",
        default=None,
        help="sample this process too, reported apart (e.g. redis-server); repeatable",
    )
    parser.add_argument(
        "--redis-url",
        default=None,
        help="the server's Redis: its commands, round trips and bytes per change (INFO)",
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
    parser.add_argument(
        "--restart-pid",
        type=int,
        default=None,
        help="send this server worker SIGTERM during the drive and report the reconnects",
    )
    parser.add_argument(
        "--restart-after",
        type=float,
        default=2.0,
        help="seconds into the drive at which --restart-pid gets SIGTERM",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a live progress line during the drive, on stderr (default: when stdout and "
        "stderr are terminals)",
    )


def run_load(args: argparse.Namespace) -> int:
    """``paylive load``: run, print the table, write ``--out``; 0 when the run completed."""
    # Imported here: ``paylive serve`` builds this command's parser too, and the
    # generator's modules were a fifth of a server's start-up.
    from .parent import execute
    from .table import render_table

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
