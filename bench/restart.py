"""One worker of two restarted under load: the reconnects per second (BENCHMARKS.md,
"Restarting a worker").

    python -m bench.restart --out bench/results/runs/restart-after.json
    python -m bench.restart --server-src /path/to/older/src --out .../restart-before.json

paylive on Redis with 2 workers (``bench.systems``), ``paylive load`` with 2,000
sockets and 200 changes/s; ``--restart-after`` seconds into the drive one worker gets
SIGTERM. ``--server-src`` runs the server from another checkout's ``src`` (the code
before the drain, say) with the same load generator, so both runs are measured alike.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .systems import ADMIN_TOKEN, API_KEY, ROOT, SYSTEMS, running

STEP_TIMEOUT_S = 600


def workers_of(supervisor: int) -> list[int]:
    """The uvicorn worker processes under ``paylive serve --workers``."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    found = []
    for pid in map(int, children):
        try:
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--server-src", default=None, help="run the server from this src")
    parser.add_argument("--sockets", type=int, default=2_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--restart-after", type=float, default=3.0)
    parser.add_argument("--drain-ms", type=int, default=None, help="PAYLIVE_DRAIN_MS")
    parser.add_argument(
        "--countdown-ms",
        type=int,
        default=5_000,
        help="PAYLIVE_COUNTDOWN_INTERVAL_MS: every session processes all run long, so the "
        "default 1 s sends a countdown per socket per second, which is not what is measured",
    )
    args = parser.parse_args()
    if args.server_src:
        os.environ["PYTHONPATH"] = str(Path(args.server_src).resolve())
    extra = {"PAYLIVE_COUNTDOWN_INTERVAL_MS": str(args.countdown_ms)}
    if args.drain_ms is not None:
        extra["PAYLIVE_DRAIN_MS"] = str(args.drain_ms)
    with tempfile.TemporaryDirectory(prefix="paylive-restart-") as tmp:
        with running(SYSTEMS["paylive-redis"], Path(tmp), ROOT, extra) as server:
            deadline = time.monotonic() + 30
            while len(workers_of(server.pid)) < 2:
                if time.monotonic() > deadline:
                    raise SystemExit("the two workers did not start")
                time.sleep(0.1)
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "paylive",
                    "load",
                    "--url",
                    server.url,
                    "--api-key",
                    API_KEY,
                    "--admin-token",
                    ADMIN_TOKEN,
                    "--sockets",
                    str(args.sockets),
                    "--rate",
                    str(args.rate),
                    "--duration",
                    str(args.duration),
                    "--drain",
                    "20",
                    "--restart-pid",
                    str(workers_of(server.pid)[0]),
                    "--restart-after",
                    str(args.restart_after),
                    "--out",
                    args.out,
                ],  # fmt: skip
                env=env,
                cwd=ROOT,
                timeout=STEP_TIMEOUT_S,
            )
    if done.returncode != 0:
        return done.returncode
    result = json.loads(Path(args.out).read_text())
    result["server_src"] = args.server_src or "this checkout"
    Path(args.out).write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(json.dumps(result["restart"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
