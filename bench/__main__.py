"""``python -m bench``: paylive and its peer side by side, in one go, on this machine.

For every system (paylive on the memory engine with 1 worker, paylive on Redis with
2 workers, python-socketio with ``AsyncRedisManager`` on 2 workers) and every rate, a
fresh server (and Redis) takes the same sockets, admin feeds and state changes from
``paylive load``'s machinery; then, again fresh, idle sockets for memory per socket.
Results go to ``--out``: one JSON per run, ``summary.json``, ``tables.md`` and the
PNG plots. Run from the repository root with the ``bench`` extra installed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from paylive.load.cli import add_arguments
from paylive.load.config import LoadError
from paylive.load.parent import PAYLIVE_WORKER, execute
from paylive.load.procstat import raise_nofile

from .summary import commit, summarize, write_tables
from .systems import ADMIN_TOKEN, API_KEY, ROOT, SYSTEMS, Running, System, running

FULL = {
    "sockets": 5000,
    "admins": 3,
    "rates": "500,1000,2000,3000",
    "duration": 15.0,
    "idle": "5000,10000,20000",
}
QUICK = {"sockets": 200, "admins": 1, "rates": "100,300", "duration": 3.0, "idle": "200,400"}


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a short run at a tiny size")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated names")
    p.add_argument("--sockets", type=int, help=f"customer sockets (default {FULL['sockets']})")
    p.add_argument("--admins", type=int, help=f"admin feeds (default {FULL['admins']})")
    p.add_argument("--rates", help=f"changes/s, comma-separated (default {FULL['rates']})")
    p.add_argument("--duration", type=float, help=f"seconds per rate (default {FULL['duration']})")
    p.add_argument("--idle", help=f"idle socket counts for RSS (default {FULL['idle']}; '' none)")
    p.add_argument("--drain", type=float, default=5.0, help="seconds for the last events")
    p.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="turns of every system at each rate (default 1); with more, the tables show "
        "each system's median run by CPU per change and a table of the spread",
    )
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="results folder")
    p.add_argument("--no-plots", action="store_true", help="tables only (no matplotlib)")
    args = p.parse_args(argv)
    if not 1 <= args.rounds <= 20:
        p.error("--rounds must be from 1 to 20")
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    unknown = set(args.systems.split(",")) - set(SYSTEMS)
    if unknown:
        p.error(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEMS)}")
    return args


def load_args(server: Running, sockets: int, admins: int, rate: int, duration: float,
              drain: float, out: Path) -> argparse.Namespace:  # fmt: skip
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    argv = [
        "--url", server.url, "--api-key", API_KEY, "--admin-token", ADMIN_TOKEN,
        "--sockets", str(sockets), "--admins", str(admins), "--rate", str(rate),
        "--duration", str(duration), "--drain", str(drain),
        "--server-pid", str(server.pid), "--out", str(out),
    ]  # fmt: skip
    for pid in server.also_pids:
        argv += ["--also-pid", str(pid)]
    if server.redis is not None:
        argv += ["--redis-url", server.redis.url]
    return parser.parse_args(argv)


def one_run(system: System, name: str, out: Path, **load: Any) -> dict[str, Any]:
    """A fresh ``system``, one load run against it; the merged result (or the error)."""
    path = out / "runs" / f"{system.name}-{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    print(f"[bench] {system.name} {name}", file=sys.stderr, flush=True)
    try:
        with running(system, out / "servers" / f"{system.name}-{name}", ROOT) as server:
            args = load_args(server, out=path, **load)
            result = execute(
                args,
                log=lambda text: print(f"  {text}", file=sys.stderr, flush=True),
                worker_argv=system.worker_argv or PAYLIVE_WORKER,
            )
    except (LoadError, RuntimeError) as exc:
        print(f"[bench] {system.name} {name} failed: {exc}", file=sys.stderr, flush=True)
        result = {"failed": str(exc)}
    result["bench"] = {"system": system.name, "run": name, "wall_s": time.monotonic() - started}
    path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # SIGTERM unwinds like an exception, so that every server and Redis is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    raise_nofile()  # the servers inherit it: 20,000 sockets need 20,000 files
    systems = [SYSTEMS[name] for name in args.systems.split(",")]
    began, at_commit = time.monotonic(), commit()
    results: list[dict[str, Any]] = []
    # Systems take turns at each size, so that the noise of a shared machine falls on
    # all of them alike rather than on whichever ran during a busy minute.
    # With --rounds, each system's runs at a rate are spread over the minutes the rate
    # takes, for the same reason.
    for rate in _ints(args.rates):
        for turn in range(1, args.rounds + 1):
            name = f"rate-{rate}" if args.rounds == 1 else f"rate-{rate}-round-{turn}"
            for system in systems:
                load = dict(sockets=args.sockets, admins=args.admins, rate=rate)
                results.append(
                    one_run(system, name, out, duration=args.duration, drain=args.drain, **load)
                )
    for sockets in _ints(args.idle):
        for system in systems:
            if sockets <= system.max_sockets:
                load = dict(sockets=sockets, admins=0, rate=0)
                results.append(
                    one_run(system, f"idle-{sockets}", out, duration=1.0, drain=1.0, **load)
                )
    names = [s.name for s in systems]
    summary = summarize(results, names, args, time.monotonic() - began, at_commit)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    write_tables(summary, out / "tables.md")
    if not args.no_plots:
        from .plots import plot_all

        plot_all(summary, out)
    print((out / "tables.md").read_text())
    print(f"[bench] done in {time.monotonic() - began:.0f} s; results in {out}", file=sys.stderr)
    return 0 if not any("failed" in r for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
