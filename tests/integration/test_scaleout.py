"""Several real ``paylive serve`` processes sharing one real Redis behave as one server."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import anyio
import httpx
import jsonschema
import pytest

from ..support import redisproc, tls
from ..support.client import Socket, admin, create, merchant, open_socket, session_url
from ..support.redisproc import (
    REDIS_SERVER,
    RedisClusterProc,
    RedisProc,
    start_cluster,
    start_redis,
)
from ..support.servers import ADMIN_TOKEN, Server
from ..support.started import started
from ..support.waiting import until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
]

OK = "4242424242424242"
NEVER = "4000000000000408"
OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
READINESS = json.loads(OPENAPI.read_text())["components"]["schemas"]["Readiness"]


@pytest.fixture(scope="module", autouse=True)
def cluster_started(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Future[RedisClusterProc]]:
    """The Redis Cluster of the module's last test, started from the module's start:
    joining its nodes is mostly waiting (redis-cli's own pauses, seconds of them), which
    the tests before it cover."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(start_cluster, tmp_path_factory.mktemp("cluster"))
    try:
        yield future
    finally:
        pool.shutdown(wait=True)
        if future.exception() is None:
            future.result().stop()


def customer(session: dict) -> dict[str, str]:
    return {"Authorization": f"Bearer {session['client_secret']}"}


def gapless(sock: Socket) -> list[int]:
    seqs = [m["seq"] for m in sock.durable()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    return seqs


async def test_socket_on_one_worker_commands_and_webhooks_on_the_other(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    async with httpx.AsyncClient(base_url=b.url) as on_b:
        session = await create(on_b)
        sock = await open_socket(session_url(a.ws_url, session))
        assert (await sock.recv())["type"] == "snapshot"
        # Pay on B; B's sandbox answers B; the socket on A sees it all, in order.
        reply = await on_b.post(
            f"/api/sessions/{session['id']}/attempts",
            json={"payment_method": {"card": OK}},
            headers=customer(session),
        )
        assert reply.status_code == 202
        await sock.state("processing")
        # Within the pair's 10 s attempt timeout: a starved machine once took over 5 s
        # for the sandbox's first webhook (its first post imports its HTTP client).
        done = await sock.state("succeeded", timeout=10)
        assert done["data"]["cause"] == "succeeded"
        assert gapless(sock) == [1, 2]
        await sock.conn.close()


async def test_webhook_lands_on_the_other_worker(pair: tuple[Server, Server]) -> None:
    a, b = pair
    async with httpx.AsyncClient(base_url=a.url) as on_a:
        session = await create(on_a)
        sock = await open_socket(session_url(a.ws_url, session))
        await sock.recv()
        # A charges; its sandbox posts the result to B, which applies it.
        await sock.send({"type": "pay", "payment_method": {"card": OK}})
        await sock.state("succeeded", timeout=10)
        await sock.conn.close()
    # B writes its access line once its answer is sent, which may be after the event
    # it published reached the socket.
    await until(lambda: "POST /webhooks/sandbox" in b.log(), timeout=5)
    assert "POST /webhooks/sandbox" not in a.log()


async def test_admin_feed_on_one_worker_sees_sessions_of_the_other(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    feed = await open_socket(f"{a.ws_url}/ws/admin?token={ADMIN_TOKEN}")
    assert (await feed.recv())["type"] == "admin.snapshot"
    async with httpx.AsyncClient(base_url=b.url) as on_b:
        session = await create(on_b)
        await on_b.post(
            f"/api/sessions/{session['id']}/attempts",
            json={"payment_method": {"card": OK}},
            headers=merchant(),
        )
        created = await feed.until(
            lambda m: m["type"] == "admin.created" and m["session"] == session["id"]
        )
        assert created["data"]["session"]["status"] == "created"
        await feed.until(
            lambda m: (
                m["type"] == "state"
                and m["session"] == session["id"]
                and m["data"]["session"]["status"] == "succeeded"
            )
        )
        summary = await feed.until(lambda m: m["type"] == "summary", timeout=3)
        assert summary["data"]["by_status"]["succeeded"] >= 1
        listed = await on_b.get("/api/admin/sessions?status=all&limit=1", headers=admin())
        assert listed.json()["sessions"][0]["id"] == session["id"]
    await feed.conn.close()


async def test_each_worker_sees_the_others_changes_at_once(pair: tuple[Server, Server]) -> None:
    """A worker decides a command on its own copy of the session when it has one; a
    change made on the other worker just before must never make it refuse wrongly."""
    a, b = pair
    async with httpx.AsyncClient(base_url=a.url) as on_a, httpx.AsyncClient(base_url=b.url) as on_b:
        for _ in range(5):
            session = await create(on_a)  # A holds a copy of it at seq 0
            url = f"/api/sessions/{session['id']}"
            paid = await on_b.post(
                url + "/attempts", json={"payment_method": {"card": NEVER}}, headers=merchant()
            )
            assert paid.status_code == 202, paid.text
            stopped = await on_a.post(
                url + "/interrupt", json={"reason": "network_error"}, headers=merchant()
            )
            assert stopped.status_code == 200, stopped.text
            assert stopped.json()["status"] == "interrupted"
            cancelled = await on_b.post(url + "/cancel", headers=merchant())
            assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
            again = await on_a.post(url + "/cancel", headers=merchant())
            assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"


async def test_resume_on_the_other_worker(pair: tuple[Server, Server]) -> None:
    a, b = pair
    async with httpx.AsyncClient(base_url=a.url) as on_a:
        session = await create(on_a)
        sock = await open_socket(session_url(a.ws_url, session))
        await sock.recv()
        await sock.send({"type": "pay", "payment_method": {"card": "4000000000000002"}})
        started = await sock.state("processing")
        await sock.conn.close()
        await anyio.sleep(0.6)  # declined meanwhile: a state and a retry prompt
        resumed = await open_socket(session_url(b.ws_url, session, since=started["seq"]))
        replay = [await resumed.recv(), await resumed.recv()]
        assert [(m["type"], m["seq"]) for m in replay] == [
            ("state", started["seq"] + 1),
            ("retry_prompt", started["seq"] + 2),
        ]
        await resumed.conn.close()


async def test_concurrent_commands_on_two_workers_never_both_win(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    async with httpx.AsyncClient(base_url=a.url) as on_a:
        session = await create(on_a)
    replies: list[httpx.Response] = []

    async def pay(url: str) -> None:
        async with httpx.AsyncClient(base_url=url, verify=tls.CONTEXT) as client:
            replies.append(
                await client.post(
                    f"/api/sessions/{session['id']}/attempts",
                    json={"payment_method": {"card": NEVER}},
                    headers=merchant(),
                )
            )

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(pay, a.url if i % 2 else b.url)
    codes = sorted(r.status_code for r in replies)
    assert codes.count(202) == 1, codes
    assert all(
        r.json()["error"]["code"] == "invalid_state" for r in replies if r.status_code == 409
    )
    async with httpx.AsyncClient(base_url=b.url) as on_b:
        got = (await on_b.get(f"/api/sessions/{session['id']}", headers=merchant())).json()
    assert len(got["attempts"]) == 1, got
    # One event, the attempt's start (the pair's attempts wait 10 s).
    assert got["attempts"][0]["status"] == "processing" and got["seq"] == 1, got


async def test_killed_worker_loses_no_deadline(redis: RedisProc) -> None:
    env = {"PAYLIVE_REDIS_URL": redis.url}
    with started(Server(env), Server(env)) as (survivor, doomed):
        async with httpx.AsyncClient(base_url=doomed.url) as on_doomed:
            session = await create(on_doomed)
            sock = await open_socket(session_url(survivor.ws_url, session))
            await sock.recv()
            reply = await on_doomed.post(
                f"/api/sessions/{session['id']}/attempts",
                json={"payment_method": {"card": NEVER}},
                headers=merchant(),
            )
            assert reply.status_code == 202
        doomed.stop(signal.SIGKILL)
        interrupted = await sock.state("interrupted", timeout=15)
        assert interrupted["data"]["cause"] == "timeout"
        await sock.until(lambda m: m["type"] == "retry_prompt")
        # Exactly once: nothing more arrives for that deadline (the survivor's timer
        # loop polls every 50 ms: a second firing would come within a few of its polls).
        with anyio.move_on_after(0.5):
            await sock.until(lambda m: m["type"] in ("state", "retry_prompt"), timeout=2)
        timeouts = [m for m in sock.durable() if m["data"].get("cause") == "timeout"]
        assert len(timeouts) == 1
        gapless(sock)
        await sock.conn.close()


async def test_workers_flag_shares_one_port(redis: RedisProc) -> None:
    # 30 payments at once: an attempt timeout long enough that none of them times out
    # on a busy machine (this test is about the port and the order, not timeouts).
    # The bound on commands in flight stays at 64: on a loaded machine the adaptive one
    # may shrink to 8 and refuse part of the burst as overloaded, which is another test's.
    env = {
        "PAYLIVE_REDIS_URL": redis.url,
        "PAYLIVE_ATTEMPT_TIMEOUT_MS": "10000",
        "PAYLIVE_ADAPTIVE_IN_FLIGHT": "0",
    }
    with Server(env, workers=2) as srv:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            sessions = [await create(http) for _ in range(30)]
        socks = [await open_socket(session_url(srv.ws_url, s)) for s in sessions]
        for sock in socks:
            assert (await sock.recv())["type"] == "snapshot"
        for sock in socks:
            await sock.send({"type": "pay", "payment_method": {"card": OK}})
        for sock in socks:
            await sock.state("succeeded", timeout=10)
            assert gapless(sock) == [1, 2]
        pids = {
            line.split("[")[1].split("]")[0]
            for line in srv.log().splitlines()
            if "Started server process" in line
        }
        assert len(pids) == 2, "two worker processes served"
        # Whichever worker answers /metrics, it counts the sockets of both.
        for _ in range(4):
            text = httpx.get(srv.url + "/metrics").text
            line = next(
                x for x in text.splitlines() if x.startswith('paylive_sockets_open{kind="customer"')
            )
            assert float(line.split()[-1]) == len(socks), line
        # Stopping the supervisor stops both workers, each draining its sockets (1012).
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, srv.stop)
            codes = [await sock.close_code(timeout=10) for sock in socks]
        assert set(codes) == {1012}, codes


async def test_redis_outage_then_recovery(tmp_path: Path) -> None:
    redis = start_redis(tmp_path / "redis", appendonly=True)
    # The charge must not race the attempt's timeout: the test counts the events, and
    # a busy machine let the one-second timeout of FAST interrupt it (seq 1 to 4).
    env = {"PAYLIVE_REDIS_URL": redis.url, "PAYLIVE_ATTEMPT_TIMEOUT_MS": "15000"}
    try:
        with Server(env) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
                session = await create(http)
                sock = await open_socket(session_url(srv.ws_url, session))
                await sock.recv()
                redis.stop()
                started = time.monotonic()
                down = await http.post(
                    "/api/sessions",
                    json={"order_id": "o", "amount": 1, "currency": "EUR"},
                    headers=merchant(),
                )
                assert (
                    down.status_code == 503 and down.json()["error"]["code"] == "engine_unavailable"
                )
                assert time.monotonic() - started < 2.5, "503 fast, not after a long timeout"
                ready = await http.get("/readyz")
                assert ready.status_code == 503 and ready.json()["ready"] is False
                await sock.send({"type": "ping"})
                assert (await sock.until(lambda m: m["type"] == "pong"))["type"] == "pong"
                redis.start()
                for _ in range(150):
                    if (await http.get("/readyz")).status_code == 200:
                        break
                    await anyio.sleep(0.1)
                else:
                    raise AssertionError("never ready again")
                got = await http.get(f"/api/sessions/{session['id']}", headers=merchant())
                assert got.status_code == 200 and got.json()["status"] == "created"
                await sock.send({"type": "pay", "payment_method": {"card": OK}})
                await sock.state("succeeded")
                # Resynchronised from the history, which had nothing new: no snapshot
                # was needed after the first, and every event came in order.
                assert sock.types().count("snapshot") == 1, sock.types()
                assert gapless(sock) == [1, 2]
                await sock.conn.close()
    finally:
        redis.stop()


def metric(srv: Server, name: str) -> float:
    """The sum of a metric's samples on ``srv`` (0 when it has none yet)."""
    text = httpx.get(srv.url + "/metrics", timeout=5).text
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


@pytest.mark.parametrize("read_only", ["yes", "no"])
async def test_a_redis_that_refuses_writes_is_not_ready(tmp_path: Path, read_only: str) -> None:
    """A Redis that answers but takes no write (made a replica, as after a failover that
    demoted it) fails every save: PING still answers, readiness must not. Nor when the
    replica takes writes (``replica-read-only no``): replication overwrites them."""
    replica = start_redis(tmp_path / "replica")
    primary = start_redis(tmp_path / "primary")
    try:
        with Server({"PAYLIVE_REDIS_URL": replica.url}) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
                ready = await http.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["checks"]["engine_writable"] is True
                said = redisproc.command(
                    replica.port, "CONFIG", "SET", "replica-read-only", read_only
                )
                assert said.startswith(b"+OK"), said
                said = redisproc.command(replica.port, "REPLICAOF", "127.0.0.1", str(primary.port))
                assert said.startswith(b"+OK"), said

                async def refused() -> dict | None:
                    reply = await http.get("/readyz")
                    body = reply.json()
                    # While the replica loads the primary's data it answers LOADING
                    # (the engine down); once loaded it answers and refuses writes.
                    if reply.status_code == 503 and body["checks"]["engine"]:
                        return body
                    return None

                body = await until(refused, timeout=10)
                jsonschema.validate(body, READINESS)
                assert body["ready"] is False and body["checks"]["engine_writable"] is False
                assert not body["checks"]["shutting_down"] and not body["checks"]["overloaded"]
                down = await http.post(
                    "/api/sessions",
                    json={"order_id": "o", "amount": 1, "currency": "EUR"},
                    headers=merchant(),
                )
                if read_only == "yes":
                    assert down.status_code == 503, down.text
                    assert down.json()["error"]["code"] == "engine_unavailable"
                else:
                    # The replica took it, and will lose it when it next syncs: why
                    # readiness must send no traffic here.
                    assert down.status_code == 201, down.text

                # Promoted again (the failover's other half): ready, and saves work.
                said = redisproc.command(replica.port, "REPLICAOF", "NO", "ONE")
                assert said.startswith(b"+OK"), said

                async def ready_again() -> bool:
                    return (await http.get("/readyz")).status_code == 200

                await until(ready_again, timeout=10)
                assert (await http.get("/readyz")).json()["checks"]["engine_writable"] is True
                await create(http)
    finally:
        replica.stop()
        primary.stop()


def probe_writes(port: int) -> int:
    """SETs run on the server since its last CONFIG RESETSTAT: an idle worker's only
    ones are readiness's probe writes."""
    stats = redisproc.command(port, "INFO", "commandstats").decode()
    found = re.search(r"cmdstat_set:calls=(\d+)", stats)
    return int(found[1]) if found else 0


async def test_readiness_probes_cost_one_write_per_reuse_window(tmp_path: Path) -> None:
    """A load balancer and a kubelet probing every worker often must not be a steady
    stream of writes (each goes to the append-only file and to every replica): within
    ``PAYLIVE_READY_CACHE_MS`` a worker reuses its answer, and probes at once share one."""
    redis = start_redis(tmp_path / "redis")
    try:
        env = {"PAYLIVE_REDIS_URL": redis.url, "PAYLIVE_READY_CACHE_MS": "60000"}
        with Server(env) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
                assert redisproc.command(redis.port, "CONFIG", "RESETSTAT").startswith(b"+OK")
                at_once = await asyncio.gather(*(http.get("/readyz") for _ in range(20)))
                one_by_one = [await http.get("/readyz") for _ in range(20)]
                for reply in at_once + one_by_one:
                    assert reply.status_code == 200, reply.text
                    jsonschema.validate(reply.json(), READINESS)
                # The first probe may have run before the reset: one write at most.
                assert probe_writes(redis.port) <= 1
    finally:
        redis.stop()


async def test_a_lost_subscription_replays_the_missed_events(tmp_path: Path) -> None:
    """The worker's subscription connection is killed, and state changes are saved
    while it reconnects: each socket is replayed what it missed from the history, in
    order and with no snapshot; the admin feed gets a snapshot marked ``resync``."""
    redis = start_redis(tmp_path / "redis")
    env = {
        "PAYLIVE_REDIS_URL": redis.url,
        "PAYLIVE_ATTEMPT_TIMEOUT_MS": "600000",
        "PAYLIVE_RETRY_DELAY_MS": "0",
        "PAYLIVE_MAX_ATTEMPTS": "10",
    }
    try:
        with Server(env) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
                session = await create(http)
                url = f"/api/sessions/{session['id']}"
                sock = await open_socket(session_url(srv.ws_url, session))
                feed = await open_socket(f"{srv.ws_url}/ws/admin?token={ADMIN_TOKEN}")
                assert (await sock.recv())["type"] == "snapshot"
                assert (await feed.recv())["type"] == "admin.snapshot"
                pay = {"payment_method": {"card": NEVER}}
                assert (await http.post(url + "/attempts", json=pay, headers=merchant())).is_success
                await sock.state("processing")
                for _ in range(3):
                    # Loud loss; the worker reconnects after a backoff of at least
                    # 100 ms, and these two commands are saved within it.
                    redisproc.command(redis.port, "CLIENT", "KILL", "TYPE", "pubsub")
                    body = {"reason": "network_error"}
                    interrupted = await http.post(url + "/interrupt", json=body, headers=merchant())
                    assert interrupted.is_success, interrupted.text
                    retried = await http.post(url + "/attempts", json=pay, headers=merchant())
                    assert retried.is_success, retried.text
                final = retried.json()["seq"]
                await sock.until(lambda m: m.get("seq") == final and m["type"] == "state", 15)
                assert gapless(sock) == list(range(1, final + 1))
                assert sock.types().count("snapshot") == 1, sock.types()
                await feed.until(
                    lambda m: m["type"] == "admin.snapshot" and m["data"].get("resync") is True
                )
                assert metric(srv, "paylive_resyncs_total") >= 1
                assert metric(srv, 'paylive_resync_catch_ups_total{how="replay"}') >= 1
                assert metric(srv, 'paylive_resync_catch_ups_total{how="snapshot"}') == 0
                await sock.conn.close()
                await feed.conn.close()
    finally:
        redis.stop()


async def test_two_workers_on_a_redis_cluster(
    cluster_started: Future[RedisClusterProc],
) -> None:
    cluster = cluster_started.result(timeout=60)
    # Six payments that must succeed: a 1 s attempt timeout was once shorter than two
    # workers and a 3-node cluster took to answer on a machine loaded to 11.
    env = {"PAYLIVE_REDIS_URL": cluster.url, "PAYLIVE_ATTEMPT_TIMEOUT_MS": "10000"}
    with started(Server(env), Server(env)) as (a, b):
        for worker in (a, b):
            # Readiness writes its probe key through the Cluster client, to its slot's node.
            ready = httpx.get(worker.url + "/readyz", timeout=10)
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["engine_writable"] is True
        async with httpx.AsyncClient(base_url=b.url) as on_b:
            sessions = [await create(on_b) for _ in range(6)]  # spread over the slots
            socks = [await open_socket(session_url(a.ws_url, s)) for s in sessions]
            for sock in socks:
                assert (await sock.recv())["type"] == "snapshot"
            for session in sessions:
                reply = await on_b.post(
                    f"/api/sessions/{session['id']}/attempts",
                    json={"payment_method": {"card": OK}},
                    headers=merchant(),
                )
                assert reply.status_code == 202
            for sock in socks:
                await sock.state("succeeded")
                assert gapless(sock) == [1, 2]
                await sock.conn.close()

            # On Cluster the counters follow the save in a second step (README), so
            # the summary may trail the sockets by that step: wait for it, boundedly.
            async def all_six_counted() -> bool:
                summary = (await on_b.get("/api/admin/summary", headers=admin())).json()
                return bool(summary["by_status"]["succeeded"] == 6)

            await until(all_six_counted, timeout=5.0)
