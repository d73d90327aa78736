"""The outbox of gateway effects and the staff's tools, against real servers: a refund
owed during a sandbox outage is made exactly once after it, whatever dies meanwhile;
reviews close only when nothing is pending (docs/protocol.md section 2.2)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ..support.client import (
    Socket,
    admin,
    create,
    merchant,
    open_socket,
    sandbox_outage,
    session_url,
)
from ..support.redisproc import REDIS_SERVER, start_redis
from ..support.servers import Server
from ..support.started import started
from ..support.waiting import until

pytestmark = pytest.mark.anyio

OK = "4242424242424242"
VOID_LOST = "4000000000000341"  # charged, and its first void is lost: a late success
# The sandbox answers after 700 ms, time enough to cancel first; failing effects are
# tried again every 100 to 400 ms.
OUTBOX = {
    "PAYLIVE_SANDBOX_DELAY_MS": "700",
    "PAYLIVE_EFFECT_RETRY_BASE_MS": "100",
    "PAYLIVE_EFFECT_RETRY_CAP_MS": "400",
}

SERVER_ENV = OUTBOX
WAIT_S = 10.0
# The sandbox is taken down for longer than any test needs, and each test brings it
# back as soon as it has seen what happens during the outage: a fixed outage of a few
# seconds was mostly waited out on a quiet machine, and on a loaded one could end
# before what it was for had happened.
OUTAGE_S = 60


def cause(name: str) -> Any:
    return lambda m: m["type"] == "state" and m["data"]["cause"] == name


async def outage_over(http: httpx.AsyncClient) -> None:
    """End the outage; the server may still be reconnecting to a restarted Redis."""

    async def ended() -> bool:
        reply = await http.post("/api/admin/sandbox/outage", json={"seconds": 0}, headers=admin())
        return reply.status_code == 200

    await until(ended, WAIT_S)


async def refund_owed(http: httpx.AsyncClient, ws_url: str) -> tuple[dict[str, Any], Socket]:
    """Pay with the card whose void is lost, cancel, take the sandbox down: the success
    lands after the end, and its refund waits in the outbox until the caller ends the
    outage."""
    session = await create(http)
    sock = await open_socket(session_url(ws_url, session))
    assert (await sock.recv())["type"] == "snapshot"
    paying = await http.post(
        f"/api/sessions/{session['id']}/attempts",
        json={"payment_method": {"card": VOID_LOST}},
        headers=merchant(),
    )
    assert paying.status_code == 202, paying.text
    cancelled = await http.post(f"/api/sessions/{session['id']}/cancel", headers=merchant())
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    await sandbox_outage(http, OUTAGE_S)
    late = await sock.until(cause("late_success_refunded"), timeout=WAIT_S)
    assert late["data"]["session"]["needs_review"] is True
    return session, sock


async def effects(http: httpx.AsyncClient, query: str) -> list[dict[str, Any]]:
    reply = await http.get(f"/api/admin/effects?{query}", headers=admin())
    assert reply.status_code == 200, reply.text
    return list(reply.json()["effects"])


async def tried_and_pending(http: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    """The session's refund once a try at it has failed."""
    with anyio.fail_after(WAIT_S):
        while True:
            found = await effects(http, f"status=pending&session={session_id}")
            if found and found[0]["tries"] >= 1:
                return found[0]
            await anyio.sleep(0.05)


async def ledger(http: httpx.AsyncClient, session_id: str) -> list[tuple[int, str]]:
    reply = await http.get(f"/api/admin/sandbox/ledger?session={session_id}", headers=admin())
    assert reply.status_code == 200, reply.text
    return [(e["attempt"], e["kind"]) for e in reply.json()["entries"]]


async def done_once(http: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    """Wait until the refund is confirmed; the provider moved the money exactly once."""
    with anyio.fail_after(3 * WAIT_S):
        while True:
            found = await effects(http, f"status=all&session={session_id}")
            if found and found[0]["status"] == "done":
                break
            await anyio.sleep(0.1)
    assert len(found) == 1, found
    assert await ledger(http, session_id) == [(1, "charge"), (1, "refund")]
    return found[0]


def metric(text: str, line_start: str) -> float:
    return float(next(x for x in text.splitlines() if x.startswith(line_start)).split()[-1])


# One worker, memory engine ----------------------------------------------------------


@pytest.fixture
def sandbox_back(server: Server) -> Iterator[None]:
    """The module's server serves the next tests: an outage a failed test left is ended."""
    yield
    reply = httpx.post(
        f"{server.url}/api/admin/sandbox/outage", json={"seconds": 0}, headers=admin(), timeout=10
    )
    assert reply.status_code == 200, reply.text


async def test_a_refund_owed_during_an_outage_is_made_once_after_it(
    server: Server, sandbox_back: None
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session, sock = await refund_owed(http, server.ws_url)
        sid = session["id"]
        pending = await tried_and_pending(http, sid)
        # The outbox gauges follow within a second (the summary loop sets them).
        with anyio.fail_after(WAIT_S):
            while True:
                text = (await http.get("/metrics")).text
                if metric(text, 'paylive_effects_pending{kind="refund"}') >= 1:
                    break
                await anyio.sleep(0.1)
        assert metric(text, "paylive_effect_age_seconds") > 0
        assert pending["id"] == f"{sid}:1:refund" and pending["kind"] == "refund"
        assert "outage" in pending["last_error"] and pending["next_at"] is not None
        assert pending["id"] in [e["id"] for e in await effects(http, "status=pending")]
        summary = (await http.get("/api/admin/summary", headers=admin())).json()
        assert summary["effects_pending"]["refund"] >= 1
        assert await ledger(http, sid) == [(1, "charge")], "no refund yet: the provider is down"
        refused = await http.post(
            f"/api/admin/sessions/{sid}/review", json={"by": "ana", "note": "x"}, headers=admin()
        )
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "effects_pending"
        assert refused.json()["session"]["needs_review"] is True

        await sandbox_outage(http, 0)
        done = await sock.until(cause("effect_done"), timeout=WAIT_S)
        assert done["data"]["effect"]["id"] == f"{sid}:1:refund"
        effect = await done_once(http, sid)
        assert effect["tries"] >= 2 and effect["done_at"] >= effect["created_at"]
        text = (await http.get("/metrics")).text
        assert metric(text, 'paylive_effect_attempts_total{kind="refund",outcome="failed"}') >= 1
        assert metric(text, 'paylive_effect_attempts_total{kind="refund",outcome="ok"}') >= 1
        with anyio.fail_after(WAIT_S):
            while metric((await http.get("/metrics")).text, "paylive_effect_age_seconds") != 0:
                await anyio.sleep(0.1)
        await sock.conn.close()


async def test_a_review_closes_once_nothing_is_pending(server: Server, sandbox_back: None) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session, sock = await refund_owed(http, server.ws_url)
        sid = session["id"]
        flagged = await http.get("/api/admin/sessions?status=needs_review", headers=admin())
        assert sid in [s["id"] for s in flagged.json()["sessions"]]
        await sandbox_outage(http, 0)
        await done_once(http, sid)
        resolved = await http.post(
            f"/api/admin/sessions/{sid}/review",
            json={"by": "ana", "note": "refund seen at the provider"},
            headers=admin(),
        )
        assert resolved.status_code == 200, resolved.text
        body = resolved.json()
        assert body["needs_review"] is False
        assert (
            body["review"]["by"] == "ana"
            and body["review"]["note"] == "refund seen at the provider"
        )
        assert [e["status"] for e in body["effects"]] == ["done"]
        closing = await sock.until(cause("review_resolved"), timeout=WAIT_S)
        assert closing["data"]["session"]["needs_review"] is False
        assert "review" not in closing["data"]["session"], "the note stays with staff"
        public = (await http.get(f"/api/sessions/{sid}", headers=merchant())).json()
        assert "review" not in public and public["needs_review"] is False
        again = await http.post(
            f"/api/admin/sessions/{sid}/review", json={"by": "bo", "note": "y"}, headers=admin()
        )
        assert again.status_code == 409 and again.json()["error"]["code"] == "invalid_state"
        flagged = await http.get("/api/admin/sessions?status=needs_review", headers=admin())
        assert sid not in [s["id"] for s in flagged.json()["sessions"]]

        history = (await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())).json()
        causes = [e["data"].get("cause") for e in history["events"]]
        assert causes == [
            "attempt_started",
            "cancelled",
            "late_success_refunded",
            "effect_done",
            "review_resolved",
        ]
        assert [e["seq"] for e in history["events"]] == [1, 2, 3, 4, 5]
        assert history["complete"] is True and history["session"]["review"]["by"] == "ana"
        await sock.conn.close()


async def test_admin_inputs_are_checked(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session = await create(http)
        sid = session["id"]
        customer = {"Authorization": f"Bearer {session['client_secret']}"}
        cases: list[tuple[str, str, Any, dict[str, str], int, str]] = [
            ("GET", "/api/admin/effects?status=late", None, admin(), 422, "invalid_field"),
            ("GET", "/api/admin/effects?limit=0", None, admin(), 422, "invalid_field"),
            ("GET", "/api/admin/effects?session=nope", None, admin(), 422, "invalid_field"),
            ("GET", "/api/admin/effects", None, merchant(), 403, "forbidden"),
            ("GET", "/api/admin/effects", None, {}, 401, "unauthorized"),
            ("GET", "/api/admin/sessions/ps_nope/events", None, admin(), 404, "not_found"),
            ("GET", f"/api/admin/sessions/{sid}/events", None, customer, 403, "forbidden"),
            ("POST", f"/api/admin/sessions/{sid}/review", {"by": "a"}, admin(), 422, "invalid_field"),
            ("POST", f"/api/admin/sessions/{sid}/review", {"by": "a", "note": " "}, admin(), 422, "invalid_field"),
            ("POST", f"/api/admin/sessions/{sid}/review", {"by": "a", "note": "n" * 1001}, admin(), 422, "invalid_field"),
            ("POST", f"/api/admin/sessions/{sid}/review", {"by": "a", "note": "n", "x": 1}, admin(), 422, "invalid_field"),
            ("POST", f"/api/admin/sessions/{sid}/review", {"by": "a", "note": "n"}, admin(), 409, "invalid_state"),
            ("POST", "/api/admin/sessions/ps_nope/review", {"by": "a", "note": "n"}, admin(), 404, "not_found"),
            ("POST", f"/api/admin/sessions/{sid}/review", {"by": "a", "note": "n"}, merchant(), 403, "forbidden"),
            ("POST", "/api/admin/sandbox/outage", {"seconds": -1}, admin(), 422, "invalid_field"),
            ("POST", "/api/admin/sandbox/outage", {"seconds": 3601}, admin(), 422, "invalid_field"),
            ("POST", "/api/admin/sandbox/outage", {"seconds": "5"}, admin(), 422, "invalid_field"),
            ("POST", "/api/admin/sandbox/outage", {"seconds": 5}, merchant(), 403, "forbidden"),
            ("GET", "/api/admin/sandbox/ledger", None, admin(), 422, "invalid_field"),
            ("GET", "/api/admin/sandbox/ledger?session=ps_nope", None, admin(), 404, "not_found"),
            ("GET", "/api/admin/sessions?status=late", None, admin(), 422, "invalid_field"),
        ]  # fmt: skip
        for method, path, body, headers, status, code in cases:
            reply = await http.request(method, path, json=body, headers=headers)
            assert (reply.status_code, reply.json()["error"]["code"]) == (status, code), (
                method,
                path,
                body,
                reply.text,
            )
        raw = await http.post(
            f"/api/admin/sessions/{sid}/review",
            content=b"{not json",
            headers={**admin(), "Content-Type": "application/json"},
        )
        assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
        # Nothing above changed the session.
        got = (await http.get(f"/api/sessions/{sid}", headers=merchant())).json()
        assert (got["seq"], got["needs_review"]) == (0, False)
        assert await ledger(http, sid) == []


async def test_a_charge_in_an_outage_is_a_network_error_and_nothing_moves(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session = await create(http)
        await sandbox_outage(http, 30)
        try:
            reply = await http.post(
                f"/api/sessions/{session['id']}/attempts",
                json={"payment_method": {"card": OK}},
                headers=merchant(),
            )
            assert reply.status_code == 202
            with anyio.fail_after(WAIT_S):
                while True:
                    got = (
                        await http.get(f"/api/sessions/{session['id']}", headers=merchant())
                    ).json()
                    if got["status"] == "interrupted":
                        break
                    await anyio.sleep(0.05)
            assert got["attempts"][0]["status"] == "network_error"
            # The retry needs a void first, and the provider cannot answer: nothing starts.
            await anyio.sleep(0.4)  # past PAYLIVE_RETRY_DELAY_MS
            retry = await http.post(
                f"/api/sessions/{session['id']}/attempts", json={}, headers=merchant()
            )
            assert (
                retry.status_code == 503 and retry.json()["error"]["code"] == "gateway_unavailable"
            )
        finally:
            await sandbox_outage(http, 0)
        assert await ledger(http, session["id"]) == []
        retry = await http.post(
            f"/api/sessions/{session['id']}/attempts", json={}, headers=merchant()
        )
        assert retry.status_code == 202, retry.text


async def test_the_sandbox_controls_are_not_served_in_production() -> None:
    # Production may run the sandbox only on purpose, and then without its controls.
    with Server({"PAYLIVE_ENV": "production", "PAYLIVE_ALLOW_SANDBOX": "1"}) as prod:
        async with httpx.AsyncClient(base_url=prod.url, timeout=10) as http:
            session = await create(http)
            out = await http.post("/api/admin/sandbox/outage", json={"seconds": 5}, headers=admin())
            assert out.status_code == 404 and out.json()["error"]["code"] == "not_found"
            book = await http.get(
                f"/api/admin/sandbox/ledger?session={session['id']}", headers=admin()
            )
            assert book.status_code == 404
            # The rest of the admin API is there.
            assert (await http.get("/api/admin/effects", headers=admin())).status_code == 200


async def test_a_provider_that_authorizes_first_is_paid_when_the_capture_is_confirmed() -> None:
    # The hold's capture must beat the attempt's timeout: under the parallel suite on
    # two slow cores it once took over 3 s; the outage half waits this long once.
    env = {**OUTBOX, "PAYLIVE_SANDBOX_AUTHORIZE_FIRST": "1", "PAYLIVE_ATTEMPT_TIMEOUT_MS": "6000"}
    with Server(env) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
            session = await create(http)
            sock = await open_socket(session_url(srv.ws_url, session))
            await sock.recv()
            await sock.send({"type": "pay", "payment_method": {"card": OK}})
            # The hold is captured by the outbox; the success comes with its confirmation.
            done = await sock.until(cause("effect_done"), timeout=WAIT_S)
            assert done["data"]["effect"]["kind"] == "capture"
            assert done["data"]["session"]["status"] == "processing", "a hold is not money"
            paid = await sock.state("succeeded", timeout=WAIT_S)
            assert paid["data"]["cause"] == "succeeded" and paid["seq"] == done["seq"] + 1
            assert paid["data"]["session"]["needs_review"] is False
            assert await ledger(http, session["id"]) == [(1, "charge"), (1, "capture")]
            await sock.conn.close()

            # The sandbox goes down before the hold is captured: the session never says
            # paid on the hold; it times out with its outcome unknown, and the capture
            # made once the sandbox is back is a late success.
            session = await create(http)
            sock = await open_socket(session_url(srv.ws_url, session))
            await sock.recv()
            await sock.send({"type": "pay", "payment_method": {"card": OK}})
            await sock.until(cause("attempt_started"), timeout=WAIT_S)
            await sandbox_outage(http, OUTAGE_S)
            timed_out = await sock.until(lambda m: m["type"] == "state", timeout=WAIT_S)
            assert timed_out["data"]["cause"] == "timeout"
            assert timed_out["data"]["session"]["attempts"][0]["status"] == "timeout"
            await tried_and_pending(http, session["id"])  # the capture failed in the outage
            await sandbox_outage(http, 0)
            late = await sock.state("succeeded", timeout=WAIT_S)
            assert late["data"]["cause"] == "late_success"
            assert await ledger(http, session["id"]) == [(1, "charge"), (1, "capture")]
            captures = await effects(http, f"status=all&session={session['id']}")
            assert [(e["kind"], e["status"]) for e in captures] == [("capture", "done")]
            assert captures[0]["tries"] >= 2, "tried during the outage, made after it"
            await sock.conn.close()


# Several workers on Redis ---------------------------------------------------------

needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


@needs_redis
async def test_the_refund_survives_the_death_of_the_worker_that_decided_it(
    tmp_path: Path,
) -> None:
    redis = start_redis(tmp_path / "redis", appendonly=True)
    try:
        env = {**OUTBOX, "PAYLIVE_REDIS_URL": redis.url}
        # The doomed worker decides (its sandbox posts the success to itself) and tries
        # the refund during the outage; the survivor makes it once the outage is over.
        with started(Server(env), Server(env)) as (survivor, doomed):
            async with httpx.AsyncClient(base_url=doomed.url, timeout=10) as on_doomed:
                session, sock = await refund_owed(on_doomed, doomed.ws_url)
                await sock.conn.close()
                await tried_and_pending(on_doomed, session["id"])
            doomed.stop(signal.SIGKILL)
            async with httpx.AsyncClient(base_url=survivor.url, timeout=10) as http:
                sid = session["id"]
                assert [e["status"] for e in await effects(http, f"status=all&session={sid}")] == [
                    "pending"
                ]
                await sandbox_outage(http, 0)
                effect = await done_once(http, sid)
                assert effect["id"] == f"{sid}:1:refund"
                history = await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())
                causes = [e["data"].get("cause") for e in history.json()["events"]]
                assert causes.count("effect_done") == 1
                assert "POST /webhooks/sandbox" not in survivor.log(), (
                    "the decision was the doomed one's"
                )
    finally:
        redis.stop()


@needs_redis
async def test_the_refund_survives_a_redis_restart(tmp_path: Path) -> None:
    redis = start_redis(tmp_path / "redis", appendonly=True)
    try:
        with Server({**OUTBOX, "PAYLIVE_REDIS_URL": redis.url}) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
                session, sock = await refund_owed(http, srv.ws_url)
                await sock.conn.close()
                sid = session["id"]
                await tried_and_pending(http, sid)
                redis.stop()
                down = await http.get("/api/admin/effects", headers=admin())
                assert down.status_code == 503
                redis.start()
                await outage_over(http)
                effect = await done_once(http, sid)
                assert effect["tries"] >= 2
                got = (await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())).json()
                assert got["session"]["needs_review"] is True
                assert [e["status"] for e in got["session"]["effects"]] == ["done"]
    finally:
        redis.stop()
