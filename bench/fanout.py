"""``python -m bench.fanout``: plain PUBLISH against sharded SPUBLISH on a local
3-node Redis Cluster, through paylive's own Redis engine.

For each mode, a fresh cluster (``tests/support/redisproc.start_cluster``, free ports,
never 6379) takes ``--engines`` engines (the workers: each follows its share of the
sessions' channels and the admin channel) and one more that saves: ``--sessions``
sessions, each saved again and again by ``--concurrency`` tasks for ``--seconds``.
Measured: saves per second, messages delivered to the engines' listeners per second,
and each node's CPU (from ``/proc``) per 1,000 messages delivered. Bounded in time;
results as JSON on stdout and in ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from paylive.core.session import PROCESSING, Session
from paylive.engine.redis import RedisEngine
from paylive.settings import Settings
from tests.support.redisproc import RedisClusterProc, start_cluster

TICKS = os.sysconf("SC_CLK_TCK")
T0 = 1_764_000_000_000
PAYLOAD = b"x" * 900  # about a state event's size


def _cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _session(session_id: str) -> Session:
    return Session(
        id=session_id,
        order_id=f"order-{session_id}",
        amount=1999,
        currency="EUR",
        created_at=T0,
        expires_at=T0 + 900_000,
        max_attempts=3,
        updated_at=T0,
        status=PROCESSING,
        deadline=T0 + 30_000,
    )


async def run_mode(
    cluster: RedisClusterProc, sharded: bool, args: argparse.Namespace
) -> dict[str, Any]:
    settings = Settings(redis_sharded_pubsub=sharded, redis_pool_size=64).redis
    received = 0

    def count(_session: str | None, _payload: bytes) -> None:
        nonlocal received
        received += 1

    workers = [RedisEngine(cluster.url, settings) for _ in range(args.engines)]
    saver = RedisEngine(cluster.url, settings)
    ids = [f"ps_f{n}" for n in range(args.sessions)]
    try:
        for engine in [*workers, saver]:
            engine.set_listeners(count, lambda: None)
            await engine.start()
        for n, session_id in enumerate(ids):
            await saver.create(_session(session_id), {}, b"created")
            await workers[n % len(workers)].subscribe(session_id)
        for engine in workers:
            await engine.subscribe(None)
        versions = dict.fromkeys(ids, 0)
        saves = 0
        stop = time.monotonic() + args.seconds

        async def saving(offset: int) -> None:
            nonlocal saves
            i = offset
            while time.monotonic() < stop:
                session_id = ids[i % len(ids)]
                i += args.concurrency
                version = versions[session_id]
                versions[session_id] = version + 1
                stored = replace(_session(session_id), seq=version + 1)
                if await saver.save(stored, version, [PAYLOAD], {}):
                    saves += 1
                else:
                    versions[session_id] = version  # raced: try it later

        await asyncio.sleep(0.5)
        received = 0
        cpu0 = [_cpu_s(node.process.pid) for node in cluster.nodes if node.process]
        began = time.monotonic()
        await asyncio.gather(*(saving(k) for k in range(args.concurrency)))
        await asyncio.sleep(0.3)  # the last messages
        window = time.monotonic() - began
        cpu1 = [_cpu_s(node.process.pid) for node in cluster.nodes if node.process]
        got = received
    finally:
        for engine in [*workers, saver]:
            await engine.close()
    node_cpu = [round(b - a, 3) for a, b in zip(cpu0, cpu1, strict=True)]
    return {
        "mode": "sharded SPUBLISH" if sharded else "plain PUBLISH",
        "saves_per_s": round(saves / window, 1),
        "messages_per_s": round(got / window, 1),
        "node_cpu_s": node_cpu,
        "node_cores": [round(c / window, 3) for c in node_cpu],
        "cluster_cpu_s_per_1000_messages": round(sum(node_cpu) / got * 1000, 4) if got else None,
        "window_s": round(window, 2),
    }


def _start_clusters(directory: Path, count: int) -> list[RedisClusterProc]:
    """``count`` fresh clusters, started side by side: starting one is mostly waiting
    (``redis-cli --cluster create`` waits for the nodes to join), and an idle cluster
    costs next to nothing while another is measured."""
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(start_cluster, directory / f"cluster{n}") for n in range(count)]
    started, failure = [], None
    for future in futures:
        try:
            started.append(future.result())
        except Exception as exc:  # noqa: BLE001 - the others are stopped, then it is raised
            failure = failure or exc
    if failure is not None:
        for cluster in started:
            cluster.stop()
        raise failure
    return started


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for round_ in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
            # A fresh cluster for each mode, both started before either is measured.
            clusters = _start_clusters(Path(tmp), 2)
            try:
                for sharded, cluster in zip((False, True), clusters, strict=True):
                    result = await run_mode(cluster, sharded, args)
                    cluster.stop()
                    result["round"] = round_ + 1
                    print(json.dumps(result), file=sys.stderr, flush=True)
                    results.append(result)
            finally:
                for cluster in clusters:
                    cluster.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.splitlines()[0])
    p.add_argument("--engines", type=int, default=2, help="subscribing engines (workers)")
    p.add_argument("--sessions", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=32, help="saves in flight")
    p.add_argument("--seconds", type=float, default=8.0, help="per mode")
    p.add_argument("--rounds", type=int, default=2, help="plain then sharded, this many times")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    results = asyncio.run(main_async(args))
    text = json.dumps(
        {"args": vars(args), "loadavg": os.getloadavg(), "results": results}, indent=1
    )
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
