"""Writes whose reply is lost on Redis Cluster (docs/protocol.md sections 2.2, 7, 8.2,
docs/scaling.md): the same guarantees as on one node (test_lost_replies.py), where a
save is two steps, the session's slot and then the global slot (engine/redis/store.py).

Every node is behind a proxy it announces as its address, so the worker reaches each
node through one; the proxies share what is to be lost, and the reply lost is the one
of the first step's script (its hash and the command's own bytes), on whichever node
owns the session's slot. The worker answers 503 and never runs the second step: the
counters, the indexes and the trail of every session did not follow the save."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from paylive.engine.redis import scripts

from ..support.client import admin, create, merchant, sandbox_outage
from ..support.redisproc import REDIS_CLI, REDIS_SERVER, command, start_cluster
from ..support.servers import Server
from ..support.tcpproxy import Losses, TcpProxy
from ..support.waiting import until
from .test_lost_replies import ENV, refunded_once_after_a_lost_reply, trail
from .test_refunds import OK, WAIT_S, ledger, paid_session, refund

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server and redis-cli are needed"
    ),
]

# Sharded pub/sub, the default on Cluster: the first step of a save is this script.
FIRST_STEP = scripts.SAVE_SHARDED.sha.encode()


@pytest.fixture(scope="module")
def cluster_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Losses]]:
    """One worker on a 3-node cluster whose nodes it reaches through proxies, and what
    those proxies are to lose. One for the module: a cluster takes seconds to join."""
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"))
    losses = Losses()
    proxies = [TcpProxy(node.port, losses=losses).start() for node in cluster.nodes]
    try:
        cluster.announce([proxy.port for proxy in proxies])
        # Every script on every node, as after a worker's first saves: a lost EVALSHA
        # of a script a node did not hold yet would be a NOSCRIPT that changed nothing.
        for node in cluster.nodes:
            for script in vars(scripts).values():
                if isinstance(script, scripts.Script):
                    command(node.port, "SCRIPT", "LOAD", script.source)
        url = f"redis://127.0.0.1:{proxies[0].port}?cluster=1"
        with Server({**ENV, "PAYLIVE_REDIS_URL": url}) as server:
            yield server, losses
    finally:
        for proxy in proxies:
            proxy.stop()
        cluster.stop()


@pytest.fixture
async def on_cluster(
    cluster_worker: tuple[Server, Losses],
) -> AsyncIterator[tuple[Losses, httpx.AsyncClient]]:
    server, losses = cluster_worker
    losses.lost = 0
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        yield losses, http
    assert not losses.armed, "a reply meant to be lost was not"
    losses.armed.clear()


async def test_a_session_created_with_a_key_whose_reply_was_lost_is_made_once(
    on_cluster: tuple[Losses, httpx.AsyncClient],
) -> None:
    """The session was made in its slot and its global step never ran: the retry with
    the key finds it, and it is listed (the global step is run again, once)."""
    losses, http = on_cluster
    body = {"order_id": "order-lost-create-c", "amount": 100, "currency": "EUR"}
    headers = {**merchant(), "Idempotency-Key": "create-c1"}
    losses.lose_reply(scripts.CREATE.sha.encode(), b"order-lost-create-c")
    first = await http.post("/api/sessions", json=body, headers=headers)
    assert losses.lost == 1
    assert first.status_code == 503, first.text
    again = await http.post("/api/sessions", json=body, headers=headers)
    assert again.status_code == 201, again.text
    sid = again.json()["id"]
    listed = await http.get("/api/admin/sessions?limit=100", headers=admin())
    orders = [s["order_id"] for s in listed.json()["sessions"]]
    assert orders.count("order-lost-create-c") == 1, orders
    # Asked a third time: still the one session, and counted once.
    third = await http.post("/api/sessions", json=body, headers=headers)
    assert third.json()["id"] == sid
    summary = (await http.get("/api/admin/summary", headers=admin())).json()
    listed = await http.get("/api/admin/sessions?limit=100", headers=admin())
    assert len(listed.json()["sessions"]) == sum(summary["by_status"].values()), summary


async def test_a_pay_whose_reply_was_lost_starts_one_attempt(
    on_cluster: tuple[Losses, httpx.AsyncClient],
) -> None:
    losses, http = on_cluster
    sid = str((await create(http, amount=100))["id"])
    url = f"/api/sessions/{sid}/attempts"
    body = {"payment_method": {"card": OK}}
    headers = {**merchant(), "Idempotency-Key": "pay-c1"}
    losses.lose_reply(FIRST_STEP, sid.encode(), b'"status":"processing"')
    first = await http.post(url, json=body, headers=headers)
    assert losses.lost == 1
    assert first.status_code == 503, first.text
    again = await http.post(url, json=body, headers=headers)
    assert again.status_code in (202, 409), again.text

    async def settled() -> dict[str, Any] | None:
        got = await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())
        session = got.json()["session"]
        return None if session["status"] == "processing" else session

    # The attempt in doubt times out: its timer was written before the save (ZADD LT).
    session = await until(settled, WAIT_S)
    assert len(session["attempts"]) == 1, session["attempts"]
    charges = [e for e in await ledger(http, sid) if e["kind"] == "charge"]
    assert len(charges) <= 1, charges


async def test_a_refund_whose_reply_was_lost_is_decided_once_and_audited_once(
    on_cluster: tuple[Losses, httpx.AsyncClient],
) -> None:
    losses, http = on_cluster
    sid = await paid_session(http)
    losses.lose_reply(FIRST_STEP, sid.encode(), b"refund_requested")
    await refunded_once_after_a_lost_reply(http, sid, "lost-reply-c1", lambda: losses.lost)
    entries = [e for e in await trail(http, "refund") if e["session"] == sid]
    assert len(entries) == 1, entries


async def test_an_effect_done_by_hand_whose_reply_was_lost_is_in_the_trail_once(
    on_cluster: tuple[Losses, httpx.AsyncClient],
) -> None:
    losses, http = on_cluster
    sid = await paid_session(http)
    await sandbox_outage(http, 60)
    try:
        made = await refund(http, sid, {"amount": 40}, "hand-c1")
        assert made.status_code == 202, made.text
        effect_id = made.json()["refund"]["id"]
        losses.lose_reply(FIRST_STEP, sid.encode(), b"effect_done_by_hand")
        url = f"/api/admin/effects/{effect_id}/done"
        first = await http.post(url, json={"note": "made by hand"}, headers=admin())
        assert losses.lost == 1
        if first.status_code != 200:
            assert first.json()["error"]["code"] == "engine_unavailable", first.text
            again = await http.post(url, json={"note": "made by hand"}, headers=admin())
            assert again.status_code in (200, 409), again.text
        got = await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())
        held = got.json()["session"]["audit"]
        assert [e["action"] for e in held].count("effect_done_by_hand") == 1
        entries = [e for e in await trail(http, "effect_done_by_hand") if e["session"] == sid]
        assert len(entries) == 1, entries
    finally:
        await sandbox_outage(http, 0)
