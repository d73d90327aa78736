"""The outcome receipt on Redis with two workers (docs/protocol.md section 10): every
worker's timer loop may fire a session's unseen-outcome timer, and the shop still gets
exactly one ``session.outcome_unseen`` per session nobody acknowledged, none for the
others; acknowledgements over HTTP and over a socket are recorded alike."""

from __future__ import annotations

import base64
from collections import Counter
from pathlib import Path

import anyio
import httpx
import pytest

from ..support.client import create, merchant, open_socket, session_url
from ..support.receiver import Receiver
from ..support.redisproc import start_redis
from ..support.servers import Server
from ..support.waiting import until

pytestmark = pytest.mark.anyio

SECRET = "whsec_" + base64.b64encode(b"receipt-merchant-secret-0123").decode()

RECEIVER_SECRET = SECRET
# Each acknowledgement follows its cancel by one or two requests: well under half a
# second on a loaded machine, but once over 1.2 s with four test sessions sharing two
# cores (load average 10), and that acknowledged session was reported unseen. The test
# waits this bound twice (arrivals, then none more).
UNSEEN_MS = 2500


async def test_exactly_one_outcome_unseen_per_unacknowledged_session(
    tmp_path: Path, receiver: Receiver
) -> None:
    redis = start_redis(tmp_path / "redis")
    env = {
        "PAYLIVE_REDIS_URL": redis.url,
        "PAYLIVE_OUTCOME_UNSEEN_MS": str(UNSEEN_MS),
        "PAYLIVE_MERCHANT_WEBHOOK_URL": receiver.url,
        "PAYLIVE_MERCHANT_WEBHOOK_SECRET": SECRET,
    }
    try:
        with Server(env, workers=2) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
                sessions = [await create(http, order_id=f"receipt-{i}") for i in range(12)]
                by_socket = sessions[0]
                sock = await open_socket(session_url(srv.ws_url, by_socket))
                await sock.recv()
                # Each acknowledged right after its end (well within the bound): one
                # over the socket, five over HTTP with the client secret.
                acked: set[str] = set()
                for index, session in enumerate(sessions):
                    reply = await http.post(
                        f"/api/sessions/{session['id']}/cancel", headers=merchant()
                    )
                    assert reply.status_code == 200
                    if index == 0:
                        await sock.state("cancelled")
                        await sock.send({"type": "seen", "status": "cancelled", "ref": "s"})
                        await sock.until(lambda m: m["type"] == "ack" and m["data"]["ref"] == "s")
                    elif index < 6:
                        reply = await http.post(
                            f"/api/sessions/{session['id']}/seen",
                            json={"status": "cancelled"},
                            headers={"Authorization": f"Bearer {session['client_secret']}"},
                        )
                        assert reply.status_code == 200, reply.text
                        assert reply.json()["outcome_seen_at"] is not None
                    else:
                        continue
                    acked.add(session["id"])
                await sock.conn.close()
                unacked = {s["id"] for s in sessions} - acked

                def unseen() -> Counter[str]:
                    return Counter(
                        a["session"]
                        for a in receiver.seen()["arrivals"]
                        if a.get("type") == "session.outcome_unseen"
                    )

                await until(lambda: set(unseen()) >= unacked, timeout=15)
                await anyio.sleep((UNSEEN_MS + 1000) / 1000)  # a second round would show
                counts = unseen()
                assert set(counts) == unacked, counts
                assert set(counts.values()) == {1}, counts
                for session_id in acked:
                    body = (
                        await http.get(f"/api/sessions/{session_id}", headers=merchant())
                    ).json()
                    assert body["outcome_seen_at"] is not None
                for session_id in unacked:
                    body = (
                        await http.get(f"/api/sessions/{session_id}", headers=merchant())
                    ).json()
                    assert body["outcome_seen_at"] is None
                    assert body["seq"] == 2  # cancelled, then outcome_unseen
    finally:
        redis.stop()
