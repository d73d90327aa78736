"""Paired runs: the code checked out against a base commit, back to back, on one system.

On a machine shared with other work, latencies and rates move with the neighbours;
what a run measures about itself holds better: CPU seconds per 1,000 changes (server
and Redis) and Redis commands and round trips per change. This runs the base and the
checkout in turns, ``--pairs`` times, each a fresh server and Redis and one
``paylive load`` run, and prints one line per run::

    python -m bench.paired --base main --system paylive-redis --rate 150 --sockets 1000

The base's ``src/`` is taken with ``git archive`` into a temporary directory and put
first on the server's ``PYTHONPATH``; the generator is the checkout's either way.
``--fixed`` turns the adaptive in-flight bound off, so that a starved server refuses
nothing and every run does the same work.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from paylive.load.config import LoadError
from paylive.load.parent import PAYLIVE_WORKER, execute

from . import systems
from .__main__ import load_args
from .systems import ROOT, SYSTEMS, running


def _export(ref: str, into: Path) -> Path:
    raw = subprocess.run(
        ["git", "archive", ref, "src"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _line(label: str, result: dict[str, Any]) -> dict[str, Any]:
    done = max(1, int(result["changes"]["ok"]))
    redis = result.get("also") or {}
    per = (result.get("redis") or {}).get("per_change", {})
    return {
        "run": label,
        "done_per_s": result["changes"]["achieved_per_s"],
        "refused": result["changes"]["errors"].get("503", 0),
        "server_cpu_s_per_1000": round(1000 * result["server"]["drive_cpu_s"] / done, 3),
        "server_switches_per_change": {
            kind: round(count / done, 2)
            for kind, count in result["server"].get("drive_switches", {}).items()
        },
        "redis_cpu_s_per_1000": round(1000 * redis.get("drive_cpu_s", 0.0) / done, 3),
        "redis_commands_per_change": per.get("commands"),
        "redis_round_trips_per_change": per.get("round_trips"),
        "others_cores": result["machine"]["others_cores_during_drive"],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.paired", description=__doc__)
    p.add_argument("--base", default="main", help="the commit to compare against")
    p.add_argument(
        "--system",
        default="paylive-redis",
        choices=["paylive-memory", "paylive-redis-1", "paylive-redis"],
    )
    p.add_argument("--rate", type=int, default=150)
    p.add_argument("--sockets", type=int, default=1000)
    p.add_argument("--admins", type=int, default=1)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--fixed", action="store_true", help="no adaptive in-flight bound")
    p.add_argument("--out", default="bench/results/paired")
    args = p.parse_args(argv)
    system = SYSTEMS[args.system]
    out = Path(args.out)
    extra = {"PAYLIVE_ADAPTIVE_IN_FLIGHT": "0"} if args.fixed else {}
    with tempfile.TemporaryDirectory(prefix="paylive-base-") as tmp:
        sources = {"base": _export(args.base, Path(tmp)), "checkout": ROOT / "src"}
        plain = systems._environment

        for n in range(1, args.pairs + 1):
            for side, src in sources.items():

                def first(*a: Any, src: Path = src) -> dict[str, str]:
                    env = plain(*a)
                    env["PYTHONPATH"] = f"{src}:{env['PYTHONPATH']}"
                    return env

                systems._environment = first  # type: ignore[assignment]
                label = f"{side}-{n}"
                path = out / f"{args.system}-{label}.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    with running(system, out / "servers" / label, ROOT, extra) as server:
                        load = load_args(
                            server, args.sockets, args.admins, args.rate, args.duration, 3.0, path
                        )
                        result = execute(load, log=lambda _: None, worker_argv=PAYLIVE_WORKER)
                except (LoadError, RuntimeError) as exc:
                    # A shared machine: a port taken by someone else between the probe
                    # and the bind. The pair goes on without this run.
                    print(json.dumps({"run": label, "failed": str(exc)[:200]}), flush=True)
                    continue
                finally:
                    systems._environment = plain
                path.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
                print(json.dumps(_line(label, result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
