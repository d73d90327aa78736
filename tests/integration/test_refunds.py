"""Refunds the shop asks for, against real servers (docs/protocol.md section 7): in
part and in full, each made once by the sandbox through the outbox, never more than
was captured (also with many requests racing on two workers over Redis), and made
exactly once after an outage by another worker when the one that decided it dies."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..support.client import admin, create, merchant, sandbox_outage
from ..support.redisproc import REDIS_SERVER, start_redis
from ..support.servers import Server
from ..support.started import started
from ..support.waiting import until

pytestmark = pytest.mark.anyio

OK = "4242424242424242"
# Failing effects are tried again every 100 to 400 ms.
OUTBOX = {
    "PAYLIVE_EFFECT_RETRY_BASE_MS": "100",
    "PAYLIVE_EFFECT_RETRY_CAP_MS": "400",
}

SERVER_ENV = OUTBOX
WAIT_S = 15.0
needs_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")


async def paid_session(http: httpx.AsyncClient, amount: int = 100) -> str:
    session = await create(http, amount=amount)
    sid = str(session["id"])
    paying = await http.post(
        f"/api/sessions/{sid}/attempts", json={"payment_method": {"card": OK}}, headers=merchant()
    )
    assert paying.status_code == 202, paying.text

    async def succeeded() -> bool:
        got = (await http.get(f"/api/sessions/{sid}", headers=merchant())).json()
        return bool(got["status"] == "succeeded")

    await until(succeeded, WAIT_S)
    return sid


async def refund(
    http: httpx.AsyncClient, sid: str, body: dict[str, Any], key: str | None = None
) -> httpx.Response:
    headers = merchant() if key is None else {**merchant(), "Idempotency-Key": key}
    return await http.post(f"/api/sessions/{sid}/refunds", json=body, headers=headers)


async def ledger(http: httpx.AsyncClient, sid: str) -> list[dict[str, Any]]:
    reply = await http.get(f"/api/admin/sandbox/ledger?session={sid}", headers=admin())
    assert reply.status_code == 200, reply.text
    return list(reply.json()["entries"])


async def refunded(http: httpx.AsyncClient, sid: str, total: int) -> dict[str, Any]:
    """The session once the provider confirmed ``total`` refunded and none pends."""

    async def check() -> dict[str, Any] | None:
        got = (await http.get(f"/api/sessions/{sid}", headers=merchant())).json()
        done = all(r["status"] == "done" for r in got.get("refunds", []))
        return got if got.get("amount_refunded") == total and done else None

    return dict(await until(check, WAIT_S))


async def merchant_events(http: httpx.AsyncClient, sid: str) -> list[dict[str, Any]]:
    reply = await http.get("/api/events?limit=1000", headers=merchant())
    assert reply.status_code == 200, reply.text
    return [e for e in reply.json()["events"] if e["session"]["id"] == sid]


# One worker, memory engine ------------------------------------------------------------


async def test_30_then_70_refund_the_payment_in_full_and_a_third_is_refused(
    server: Server,
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        sid = await paid_session(http)
        first = await refund(http, sid, {"amount": 30, "reason": "one item returned"}, "r-1")
        assert first.status_code == 202, first.text
        made = first.json()["refund"]
        assert (made["id"], made["amount"], made["status"]) == (f"{sid}:1:refund.1", 30, "pending")
        assert made["reason"] == "one item returned" and made["requested_by"] == "merchant"
        again = await refund(http, sid, {"amount": 30, "reason": "one item returned"}, "r-1")
        assert again.status_code == 202 and again.json() == first.json(), "same key: same answer"
        second = await refund(http, sid, {}, "r-2")  # no amount: what remains
        assert second.status_code == 202, second.text
        assert second.json()["refund"]["amount"] == 70

        got = await refunded(http, sid, 100)
        assert [(r["amount"], r["status"]) for r in got["refunds"]] == [(30, "done"), (70, "done")]
        assert got["status"] == "succeeded" and got["needs_review"] is False
        entries = await ledger(http, sid)
        refunds = [(e["kind"], e.get("amount")) for e in entries if e["kind"] == "refund"]
        assert refunds == [("refund", 30), ("refund", 70)], entries

        async def two_events() -> list[dict[str, Any]] | None:
            found = [e for e in await merchant_events(http, sid) if e["type"].endswith("refunded")]
            return found if len(found) == 2 else None

        partial, full = await until(two_events, WAIT_S)
        assert partial["type"] == "session.partially_refunded"
        assert partial["refund"] == {
            "id": f"{sid}:1:refund.1",
            "amount": 30,
            "amount_refunded": 30,
            "reason": "one item returned",
        }
        assert full["type"] == "session.refunded"
        assert (full["refund"]["amount"], full["refund"]["amount_refunded"]) == (70, 100)
        assert full["session"]["amount_refunded"] == 100

        third = await refund(http, sid, {"amount": 1}, "r-3")
        assert third.status_code == 409, third.text
        assert third.json()["error"]["code"] == "refund_exceeds_captured"
        assert third.json()["session"]["amount_refunded"] == 100
        assert len([e for e in await ledger(http, sid) if e["kind"] == "refund"]) == 2


async def test_refund_inputs_are_checked_and_change_nothing(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        unpaid = await create(http, amount=100)
        refused = await refund(http, unpaid["id"], {"amount": 10})
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "not_paid"
        sid = await paid_session(http)
        customer = {"Authorization": f"Bearer {unpaid['client_secret']}"}
        cases: list[tuple[str, Any, dict[str, str], int, str]] = [
            (sid, {"amount": 0}, merchant(), 422, "invalid_field"),
            (sid, {"amount": -5}, merchant(), 422, "invalid_field"),
            (sid, {"amount": 1.5}, merchant(), 422, "invalid_field"),
            (sid, {"amount": "10"}, merchant(), 422, "invalid_field"),
            (sid, {"amount": 101}, merchant(), 409, "refund_exceeds_captured"),
            (sid, {"reason": ""}, merchant(), 422, "invalid_field"),
            (sid, {"reason": "r" * 201}, merchant(), 422, "invalid_field"),
            (sid, {"extra": 1}, merchant(), 422, "invalid_field"),
            (sid, {"amount": 10}, {}, 401, "unauthorized"),
            (sid, {"amount": 10}, customer, 403, "forbidden"),
            ("ps_nope", {"amount": 10}, merchant(), 404, "not_found"),
        ]  # fmt: skip
        for session_id, body, headers, status, code in cases:
            reply = await http.post(
                f"/api/sessions/{session_id}/refunds", json=body, headers=headers
            )
            assert (reply.status_code, reply.json()["error"]["code"]) == (status, code), (
                body,
                reply.text,
            )
        raw = await http.post(
            f"/api/sessions/{sid}/refunds",
            content=b"[1]",
            headers={**merchant(), "Content-Type": "application/json"},
        )
        assert raw.status_code == 400 and raw.json()["error"]["code"] == "invalid_json"
        got = (await http.get(f"/api/sessions/{sid}", headers=merchant())).json()
        assert "refunds" not in got and got["seq"] == 2, "nothing above changed the session"
        assert [e["kind"] for e in await ledger(http, sid)] == ["charge"]


# Two workers on Redis -------------------------------------------------------------------


@needs_redis
async def test_twenty_racing_refunds_of_60_on_two_workers_make_one(tmp_path: Path) -> None:
    redis = start_redis(tmp_path / "redis")
    try:
        env = {**OUTBOX, "PAYLIVE_REDIS_URL": redis.url}
        with started(Server(env), Server(env)) as (one, two):
            async with (
                httpx.AsyncClient(base_url=one.url, timeout=20) as a,
                httpx.AsyncClient(base_url=two.url, timeout=20) as b,
            ):
                sid = await paid_session(a)
                # Each worker has the session cached from the payment or the reads.
                await b.get(f"/api/sessions/{sid}", headers=merchant())
                replies = await asyncio.gather(
                    *(
                        refund(a if i % 2 else b, sid, {"amount": 60}, f"race-{i}")
                        for i in range(20)
                    )
                )
                statuses = sorted(r.status_code for r in replies)
                assert statuses.count(202) == 1, [r.text for r in replies]
                codes = {r.json()["error"]["code"] for r in replies if r.status_code != 202}
                assert codes <= {"refund_exceeds_captured", "conflict"}, codes
                got = await refunded(b, sid, 60)
                assert [r["amount"] for r in got["refunds"]] == [60]
                entries = await ledger(a, sid)
                assert [(e["kind"], e.get("amount")) for e in entries] == [
                    ("charge", None),
                    ("refund", 60),
                ]
    finally:
        redis.stop()


@needs_redis
async def test_a_refund_decided_in_an_outage_is_made_once_by_the_other_worker(
    tmp_path: Path,
) -> None:
    redis = start_redis(tmp_path / "redis", appendonly=True)
    try:
        env = {**OUTBOX, "PAYLIVE_REDIS_URL": redis.url}
        with started(Server(env), Server(env)) as (survivor, doomed):
            async with httpx.AsyncClient(base_url=doomed.url, timeout=10) as on_doomed:
                sid = await paid_session(on_doomed)
                # Longer than the test needs: it ends the outage once the doomed worker
                # has tried the refund in it and died (a fixed outage was waited out).
                await sandbox_outage(on_doomed, 60)
                made = await refund(on_doomed, sid, {"amount": 40}, "outage-1")
                assert made.status_code == 202, made.text

                async def tried() -> bool:
                    reply = await on_doomed.get(
                        f"/api/admin/effects?status=pending&session={sid}", headers=admin()
                    )
                    found = reply.json()["effects"]
                    return bool(found and found[0]["tries"] >= 1)

                await until(tried, WAIT_S)
            doomed.stop(signal.SIGKILL)
            async with httpx.AsyncClient(base_url=survivor.url, timeout=10) as http:
                await sandbox_outage(http, 0)
                got = await refunded(http, sid, 40)
                [effect] = got["refunds"]
                assert effect["id"] == f"{sid}:1:refund.1"
                entries = await ledger(http, sid)
                assert [(e["kind"], e.get("amount")) for e in entries] == [
                    ("charge", None),
                    ("refund", 40),
                ]
                history = await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())
                causes = [e["data"].get("cause") for e in history.json()["events"]]
                assert causes.count("refund_requested") == 1
                assert causes.count("effect_done") == 1
                tries = history.json()["session"]["effects"][0]["tries"]
                assert tries >= 2, "tried in the outage, made after it"
    finally:
        redis.stop()


@needs_redis
async def test_a_refund_asked_again_after_its_kept_answer_was_lost_is_not_made_twice(
    tmp_path: Path,
) -> None:
    """The shop's retry, with the same Idempotency-Key, of a refund whose answer was
    never kept: the worker died after the save and before keeping it (its lock runs
    out), or the engine's reply to the save was lost (the key is let go for a retry).
    Either way the key's record is gone, which is what deleting it here makes. The
    refund was decided and saved: the retry must find it, not decide a second one
    (with 30 of 100 asked, that gave 60 back)."""
    import redis.asyncio as aioredis

    redis = start_redis(tmp_path / "redis")
    try:
        env = {**OUTBOX, "PAYLIVE_REDIS_URL": redis.url}
        with started(Server(env)) as (server,):
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                sid = await paid_session(http)
                first = await refund(http, sid, {"amount": 30}, "lost-1")
                assert first.status_code == 202, first.text
                client = aioredis.from_url(redis.url)
                try:
                    kept = await client.keys("paylive:rec:idem:*")
                    assert len(kept) == 1, kept
                    await client.delete(*kept)
                finally:
                    await client.aclose()
                again = await refund(http, sid, {"amount": 30}, "lost-1")
                assert again.status_code == 202, again.text
                assert again.json()["refund"]["id"] == first.json()["refund"]["id"]
                got = await refunded(http, sid, 30)
                assert [r["amount"] for r in got["refunds"]] == [30], "refunded twice"
                entries = await ledger(http, sid)
                assert [(e["kind"], e.get("amount")) for e in entries] == [
                    ("charge", None),
                    ("refund", 30),
                ]
    finally:
        redis.stop()
