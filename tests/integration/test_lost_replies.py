"""Writes whose reply from Redis is lost (docs/protocol.md sections 2.2, 7, 8.2): the
command reached Redis and was applied, the worker never heard back and answered 503
``engine_unavailable``, and the client asks again. A TCP proxy between the worker and
Redis (``TcpProxy.lose_reply``) lets the chosen command through and drops its reply."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..support.client import admin, create, merchant, sandbox_outage
from ..support.receiver import Receiver
from ..support.redisproc import REDIS_SERVER, command, start_redis
from ..support.servers import Server
from ..support.started import started
from ..support.tcpproxy import TcpProxy
from ..support.waiting import until
from .test_refunds import OK, OUTBOX, WAIT_S, ledger, merchant_events, paid_session, refund

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
]

RECEIVER_SECRET = "whsec_" + base64.b64encode(b"lost-reply-merchant-secret").decode()
# A lost reply is answered within a second, not the suite's generous three.
ENV = {**OUTBOX, "PAYLIVE_REDIS_TIMEOUT_MS": "1000"}
# The sandbox never answers for this card: its attempt stays processing.
NEVER = "4000000000000408"


async def trail(http: httpx.AsyncClient, action: str) -> list[dict[str, Any]]:
    """The entries of ``action`` in the trail of every session."""
    reply = await http.get("/api/admin/audit?limit=500", headers=admin())
    assert reply.status_code == 200, reply.text
    return [e for e in reply.json()["entries"] if e["action"] == action]


async def refunded_once_after_a_lost_reply(
    http: httpx.AsyncClient, sid: str, key: str, lost: Callable[[], int]
) -> None:
    """A refund of 30 asked with ``key`` whose reply is lost (the caller armed the
    loss; ``lost`` counts the replies lost), then asked again: one refund, the same
    one both times, one entry in the session's trail."""
    first = await refund(http, sid, {"amount": 30}, key)
    assert lost() == 1
    again = await refund(http, sid, {"amount": 30}, key)
    assert again.status_code == 202, again.text
    if first.status_code == 202:
        assert first.json()["refund"]["id"] == again.json()["refund"]["id"]

    async def done() -> dict[str, Any] | None:
        got = await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())
        session = got.json()["session"]
        return session if session.get("amount_refunded") == 30 else None

    session = await until(done, WAIT_S)
    assert [r["amount"] for r in session["refunds"]] == [30], "refunded twice"
    assert [e["action"] for e in session["audit"]].count("refund") == 1


@contextlib.asynccontextmanager
async def behind_proxy(
    tmp_path: Path, env: dict[str, str] | None = None
) -> AsyncIterator[tuple[TcpProxy, httpx.AsyncClient]]:
    """A server whose Redis is reached through a proxy that can lose a reply, and a
    client of it; ``env`` is added to the module's."""
    redis = start_redis(tmp_path / "redis")
    proxy = TcpProxy(redis.port).start()
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        with started(Server({**ENV, "PAYLIVE_REDIS_URL": url, **(env or {})})) as (server,):
            async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                yield proxy, http
    finally:
        proxy.stop()
        redis.stop()


async def test_an_effect_done_by_hand_whose_reply_was_lost_is_in_the_trail_once(
    tmp_path: Path,
) -> None:
    """The action was saved with its entry in the session; the worker must still copy
    it to the trail of every session (and the archive), not leave it to a retry that
    finds the effect done and is refused."""
    async with behind_proxy(tmp_path) as (proxy, http):
        sid = await paid_session(http)
        await sandbox_outage(http, 60)
        made = await refund(http, sid, {"amount": 40}, "hand-1")
        assert made.status_code == 202, made.text
        effect_id = made.json()["refund"]["id"]
        proxy.lose_reply(b"effect_done_by_hand")
        url = f"/api/admin/effects/{effect_id}/done"
        first = await http.post(url, json={"note": "made by hand"}, headers=admin())
        assert proxy.lost == 1
        if first.status_code != 200:
            assert first.json()["error"]["code"] == "engine_unavailable", first.text
            again = await http.post(url, json={"note": "made by hand"}, headers=admin())
            assert again.status_code in (200, 409), again.text
        got = await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())
        held = got.json()["session"]["audit"]
        assert [e["action"] for e in held].count("effect_done_by_hand") == 1
        entries = await trail(http, "effect_done_by_hand")
        assert [e["session"] for e in entries] == [sid], entries


async def test_an_action_saved_by_a_worker_that_loses_redis_then_is_in_the_trail_once(
    tmp_path: Path,
) -> None:
    """The refund's save is applied, and Redis is gone before its reply: the worker
    cannot read the session again nor copy anything, and answers 503. The save itself
    put the entry in the trail of every session (one Redis), so once Redis is back the
    trail holds it, once, with no retry of the client's. (Its copy after the save, as
    it was made, never came: the entry was left in the session's own trail only.)"""
    async with behind_proxy(tmp_path) as (proxy, http):
        sid = await paid_session(http)
        proxy.lose_reply(b"refund_requested", then_refuse=True)
        first = await refund(http, sid, {"amount": 30}, "gone-1")
        assert proxy.lost == 1
        assert first.status_code == 503, first.text
        assert first.json()["error"]["code"] == "engine_unavailable", first.text
        proxy.start()

        async def listed() -> list[dict[str, Any]] | None:
            reply = await http.get("/api/admin/audit?limit=500", headers=admin())
            if reply.status_code != 200:
                return None  # the worker's connections to Redis are made anew
            entries = [e for e in reply.json()["entries"] if e["action"] == "refund"]
            return entries or None

        entries = await until(listed, WAIT_S)
        assert [e["session"] for e in entries] == [sid], entries
        got = await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())
        assert [e["id"] for e in got.json()["session"]["audit"]] == [entries[0]["id"]]


async def test_a_refund_whose_reply_was_lost_is_decided_once_and_audited_once(
    tmp_path: Path,
) -> None:
    """The shop asks again with the same Idempotency-Key: one refund of 30 (not 60
    given back), one entry in the session's trail and in the trail of every session."""
    async with behind_proxy(tmp_path) as (proxy, http):
        sid = await paid_session(http)
        proxy.lose_reply(b"refund_requested")
        await refunded_once_after_a_lost_reply(http, sid, "lost-reply-1", lambda: proxy.lost)
        assert [e["session"] for e in await trail(http, "refund")] == [sid]


async def test_a_provider_success_whose_reply_was_lost_is_applied_once(tmp_path: Path) -> None:
    """The sandbox's webhook is answered 503 and sent again: the session succeeds once,
    one merchant event says so, nothing is refunded."""
    async with behind_proxy(tmp_path) as (proxy, http):
        sid = str((await create(http, amount=100))["id"])
        proxy.lose_reply(b'"status":"succeeded"')
        paying = await http.post(
            f"/api/sessions/{sid}/attempts",
            json={"payment_method": {"card": OK}},
            headers=merchant(),
        )
        assert paying.status_code == 202, paying.text

        async def succeeded() -> bool:
            got = await http.get(f"/api/sessions/{sid}", headers=merchant())
            return got.status_code == 200 and got.json()["status"] == "succeeded"

        await until(succeeded, WAIT_S)
        assert proxy.lost == 1
        got = await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())
        session = got.json()["session"]
        assert [a["status"] for a in session["attempts"]] == ["succeeded"]
        assert not session["needs_review"]
        assert session.get("effects", []) == []

        async def told() -> list[dict[str, Any]] | None:
            # The outbox lists the event after the save: a moment after the status.
            events = await merchant_events(http, sid)
            return events if any(e["type"] == "session.succeeded" for e in events) else None

        events = await until(told, WAIT_S)
        assert [e["type"] for e in events].count("session.succeeded") == 1, events
        assert [e["kind"] for e in await ledger(http, sid)] == ["charge"]


async def test_a_session_created_with_a_key_whose_reply_was_lost_is_made_once(
    tmp_path: Path,
) -> None:
    async with behind_proxy(tmp_path) as (proxy, http):
        body = {"order_id": "order-lost-create", "amount": 100, "currency": "EUR"}
        headers = {**merchant(), "Idempotency-Key": "create-1"}
        await create(http)  # the script is loaded: the next create is applied
        proxy.lose_reply(b"order-lost-create")
        first = await http.post("/api/sessions", json=body, headers=headers)
        assert proxy.lost == 1
        again = await http.post("/api/sessions", json=body, headers=headers)
        assert again.status_code == 201, again.text
        listed = await http.get("/api/admin/sessions?limit=100", headers=admin())
        orders = [s["order_id"] for s in listed.json()["sessions"]]
        assert first.status_code == 503, first.text
        assert orders.count("order-lost-create") == 1, (first.text, orders)


async def test_a_pay_whose_reply_was_lost_is_answered_with_its_attempt_again(
    tmp_path: Path,
) -> None:
    """The attempt was saved, its charge never asked (the request ended at the save),
    and the key let go: the same request again is answered with that attempt (202,
    processing; not 409 ``invalid_state``, kept for the key a day), and starts no second
    attempt. The attempt lasts longer than the 503 takes (up to the Redis timeout)."""
    env = {"PAYLIVE_ATTEMPT_TIMEOUT_MS": "10000"}
    async with behind_proxy(tmp_path, env) as (proxy, http):
        await paid_session(http)  # the save script is loaded
        sid = str((await create(http, amount=100))["id"])
        url = f"/api/sessions/{sid}/attempts"
        body = {"payment_method": {"card": OK}}
        headers = {**merchant(), "Idempotency-Key": "pay-1"}
        proxy.lose_reply(b'"status":"processing"')
        first = await http.post(url, json=body, headers=headers)
        assert proxy.lost == 1
        assert first.status_code == 503, first.text
        assert first.json()["error"]["code"] == "engine_unavailable", first.text

        again = await http.post(url, json=body, headers=headers)

        assert again.status_code == 202, again.text
        session = again.json()
        assert (session["status"], session["attempt"]) == ("processing", 1), session
        assert [a["status"] for a in session["attempts"]] == ["processing"]
        assert (await http.post(url, json=body, headers=headers)).json() == session
        other = {"payment_method": {"card": "5555555555554444"}}
        reused = await http.post(url, json=other, headers=headers)
        assert reused.status_code == 422, reused.text
        assert reused.json()["error"]["code"] == "idempotency_key_reused"
        # Ended now (its void confirms nothing was taken) rather than at its deadline.
        cancel = await http.post(f"/api/sessions/{sid}/cancel", headers=merchant())
        assert cancel.status_code == 200, cancel.text
        assert [a["status"] for a in cancel.json()["attempts"]] == ["voided"]
        kinds = [(e["attempt"], e["kind"]) for e in await ledger(http, sid)]
        # The charge never reached the provider, and the same request asked none.
        assert kinds == [(1, "void")], kinds


async def test_a_refund_confirmed_whose_reply_was_lost_is_made_and_told_once(
    tmp_path: Path,
) -> None:
    async with behind_proxy(tmp_path) as (proxy, http):
        sid = await paid_session(http)
        proxy.lose_reply(b'"cause":"effect_done"')
        made = await refund(http, sid, {"amount": 30}, "confirm-1")
        assert made.status_code == 202, made.text

        async def done() -> dict[str, Any] | None:
            got = await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())
            if got.status_code != 200:
                return None
            reply = got.json()
            return reply if reply["session"].get("amount_refunded") == 30 else None

        reply = await until(done, WAIT_S)
        assert proxy.lost == 1
        causes = [e["data"].get("cause") for e in reply["events"]]
        assert causes.count("effect_done") == 1, causes
        refunds = [e for e in await ledger(http, sid) if e["kind"] == "refund"]
        assert len(refunds) == 1, refunds
        events = [e["type"] for e in await merchant_events(http, sid)]
        assert events.count("session.partially_refunded") == 1, events


async def test_a_send_again_whose_reply_was_lost_is_in_the_trail_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Staff send again an event the shop never took; the save that queues it is made
    and its reply lost. The retry is refused (``delivery_pending``, or it is sent a
    second time later): the first action's entry must reach the trail all the same."""
    webhooks = {
        "PAYLIVE_MERCHANT_WEBHOOK_URL": receiver.url,
        "PAYLIVE_MERCHANT_WEBHOOK_SECRET": RECEIVER_SECRET,
        "PAYLIVE_MERCHANT_EVENTS": "all",
        "PAYLIVE_MERCHANT_WEBHOOK_TIMEOUT_MS": "1000",
        "PAYLIVE_MERCHANT_RETRY_MS": "50",
        "PAYLIVE_MERCHANT_RETRY_FOR_MS": "1000",
    }
    receiver.set(fail=10_000, status=500)
    try:
        async with behind_proxy(tmp_path, webhooks) as (proxy, http):
            sid = str((await create(http, amount=100))["id"])
            cancel = await http.post(f"/api/sessions/{sid}/cancel", headers=merchant())
            assert cancel.status_code == 200, cancel.text

            async def failed() -> list[dict[str, Any]]:
                reply = await http.get("/api/admin/deliveries?status=open", headers=admin())
                return [
                    d
                    for d in reply.json()["deliveries"]
                    if d["session"] == sid and d["status"] == "failed"
                ]

            [delivery] = await until(failed, WAIT_S)
            receiver.set(fail=0)
            proxy.lose_reply(b"send_again")
            url = f"/api/admin/deliveries/{delivery['id']}/retry"
            first = await http.post(url, headers=admin())
            assert proxy.lost == 1
            if first.status_code != 202:
                assert first.json()["error"]["code"] == "engine_unavailable", first.text
            entries = await trail(http, "send_again")
            assert [e["session"] for e in entries] == [sid], entries
    finally:
        receiver.set(fail=0)


async def test_a_cancel_whose_reply_was_lost_is_told_once(tmp_path: Path) -> None:
    """The retry finds the session cancelled (409 ``invalid_state``): one cancel, one
    merchant event, made by the save that was applied."""
    async with behind_proxy(tmp_path) as (proxy, http):
        await paid_session(http)  # the save script is loaded
        sid = str((await create(http, amount=100))["id"])
        proxy.lose_reply(b'"status":"cancelled"')
        url = f"/api/sessions/{sid}/cancel"
        first = await http.post(url, headers=merchant())
        assert proxy.lost == 1
        assert first.status_code == 503, first.text
        again = await http.post(url, headers=merchant())
        assert again.status_code == 409, again.text
        assert again.json()["error"]["code"] == "invalid_state"

        async def told() -> list[str]:
            return [e["type"] for e in await merchant_events(http, sid)]

        events = await until(told, WAIT_S)
        assert events.count("session.cancelled") == 1, events


async def test_a_keyed_cancel_whose_reply_was_lost_is_answered_with_what_it_did(
    tmp_path: Path,
) -> None:
    """The cancel was saved and its key let go (503): the same request again is answered
    200 with the session it cancelled, and that answer is kept for the key (before: 409
    ``invalid_state``, "already cancelled", kept for a day). Another key on the same
    session is another request, refused as ever; one cancel, one merchant event."""
    async with behind_proxy(tmp_path) as (proxy, http):
        await paid_session(http)  # the save script is loaded
        sid = str((await create(http, amount=100))["id"])
        url = f"/api/sessions/{sid}/cancel"
        headers = {**merchant(), "Idempotency-Key": "cancel-1"}
        proxy.lose_reply(b'"status":"cancelled"')
        first = await http.post(url, headers=headers)
        assert proxy.lost == 1
        assert first.status_code == 503, first.text
        assert first.json()["error"]["code"] == "engine_unavailable", first.text

        again = await http.post(url, headers=headers)

        assert again.status_code == 200, again.text
        assert again.json()["status"] == "cancelled"
        assert (await http.post(url, headers=headers)).json() == again.json()
        other = await http.post(url, headers={**merchant(), "Idempotency-Key": "cancel-2"})
        assert other.status_code == 409, other.text
        assert other.json()["error"]["code"] == "invalid_state"

        async def told() -> list[str]:
            return [e["type"] for e in await merchant_events(http, sid)]

        events = await until(told, WAIT_S)
        assert events.count("session.cancelled") == 1, events


async def test_a_keyed_interrupt_whose_reply_was_lost_is_answered_with_what_it_did(
    tmp_path: Path,
) -> None:
    """The attempt (its provider never answers) was interrupted by the save whose reply
    was lost: the same request again is answered 200 with the session interrupted, not
    409 "no attempt is processing"."""
    async with behind_proxy(tmp_path) as (proxy, http):
        await paid_session(http)  # the save script is loaded
        sid = str((await create(http, amount=100))["id"])
        paying = await http.post(
            f"/api/sessions/{sid}/attempts",
            json={"payment_method": {"card": NEVER}},
            headers=merchant(),
        )
        assert paying.status_code == 202, paying.text
        url = f"/api/sessions/{sid}/interrupt"
        body = {"reason": "network_error"}
        headers = {**merchant(), "Idempotency-Key": "interrupt-1"}
        proxy.lose_reply(b'"status":"interrupted"')
        first = await http.post(url, json=body, headers=headers)
        assert proxy.lost == 1
        assert first.status_code == 503, first.text

        again = await http.post(url, json=body, headers=headers)

        assert again.status_code == 200, again.text
        session = again.json()
        assert (session["status"], session["attempt"]) == ("interrupted", 1), session
        assert [a["status"] for a in session["attempts"]] == ["network_error"]


# Staff actions whose answer was never kept ------------------------------------------


def lock_runs_out(proxy: TcpProxy, url: str, key: str) -> None:
    """The lock of ``key`` on ``POST url``, left by a request whose worker lost Redis
    before it could let it go, gone as its 60 s would make it (``LOCK_TTL_MS``)."""
    name = hashlib.sha256(f"POST {url}\n{key}".encode()).hexdigest()
    assert command(proxy.target[1], "DEL", f"paylive:rec:idem:{name}") == b":1\r\n"


async def lost_then_sent_again(
    http: httpx.AsyncClient,
    proxy: TcpProxy,
    url: str,
    body: dict[str, Any] | None,
    key: str,
    saved: bytes,
    meanwhile: Callable[[], Awaitable[object]] | None = None,
) -> httpx.Response:
    """Staff's keyed action whose save (holding ``saved``) is applied, Redis then gone
    before its reply: 503, nothing kept for the key, which stays locked until its lock
    runs out. Then (after ``meanwhile``) the same request again, as the dashboard sends
    it: its answer."""
    headers = {**admin(), "Idempotency-Key": key}
    lost = proxy.lost
    proxy.lose_reply(saved, then_refuse=True)
    first = await http.post(url, json=body, headers=headers)
    assert proxy.lost == lost + 1
    assert first.status_code == 503, first.text
    assert first.json()["error"]["code"] == "engine_unavailable", first.text
    proxy.start()

    async def in_use() -> httpx.Response | None:
        reply = await http.post(url, json=body, headers=headers)
        return reply if reply.status_code != 503 else None  # reconnecting to Redis

    locked = await until(in_use, WAIT_S)
    assert locked.status_code == 409, locked.text
    assert locked.json()["error"]["code"] == "idempotency_key_in_use"
    lock_runs_out(proxy, url, key)
    if meanwhile is not None:
        await meanwhile()
    return await http.post(url, json=body, headers=headers)


async def test_a_keyed_effect_done_and_review_whose_answers_were_lost_are_answered_with_what_they_did(
    tmp_path: Path,
) -> None:
    """Marked done by hand, then the review resolved, each saved with Redis gone before
    its reply: the same request again is answered 200 with the session it changed, and
    that answer is kept for the key (before: 409 ``invalid_state``, "the effect is done
    already", "does not need review", kept for a day). One entry each in the trail;
    another key is another request, refused as ever."""
    env = {"PAYLIVE_EFFECT_REVIEW_AFTER_MS": "100"}
    async with behind_proxy(tmp_path, env) as (proxy, http):
        sid = await paid_session(http)
        await sandbox_outage(http, 60)
        made = await refund(http, sid, {"amount": 40}, "hand-refund")
        assert made.status_code == 202, made.text
        effect_id = made.json()["refund"]["id"]

        async def flagged() -> bool:
            got = await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())
            return bool(got.json()["session"]["needs_review"])

        await until(flagged, WAIT_S)
        url = f"/api/admin/effects/{effect_id}/done"
        body = {"note": "made by hand"}
        done = await lost_then_sent_again(http, proxy, url, body, "done-1", b"effect_done_by_hand")
        assert done.status_code == 200, done.text
        assert [e["status"] for e in done.json()["refunds"]] == ["done"]
        headers = {**admin(), "Idempotency-Key": "done-1"}
        assert (await http.post(url, json=body, headers=headers)).json() == done.json()
        other = await http.post(url, json=body, headers={**admin(), "Idempotency-Key": "done-2"})
        assert other.status_code == 409, other.text
        assert other.json()["error"]["code"] == "invalid_state"

        url = f"/api/admin/sessions/{sid}/review"
        body = {"by": "ana", "note": "refunded by hand"}
        resolved = await lost_then_sent_again(
            http, proxy, url, body, "review-1", b"review_resolved"
        )
        assert resolved.status_code == 200, resolved.text
        assert resolved.json()["needs_review"] is False
        assert resolved.json()["review"]["note"] == "refunded by hand"

        got = await http.get(f"/api/admin/sessions/{sid}/events", headers=admin())
        actions = [e["action"] for e in got.json()["session"]["audit"]]
        assert actions.count("effect_done_by_hand") == 1 and actions.count("review_resolved") == 1
        causes = [e["data"].get("cause") for e in got.json()["events"]]
        assert causes.count("review_resolved") == 1, causes
        for action in ("effect_done_by_hand", "review_resolved"):
            assert [e["session"] for e in await trail(http, action)] == [sid]


async def test_a_keyed_send_again_whose_answer_was_lost_posts_the_event_once(
    tmp_path: Path, receiver: Receiver
) -> None:
    """Staff send again an event the shop never took, with a key; its save is applied
    and Redis gone before its reply (503). Once back, the event is posted; the same
    request again is answered with that delivery (before: queued again, and the shop
    got the event a second time), and the trail has the action once."""
    webhooks = {
        "PAYLIVE_MERCHANT_WEBHOOK_URL": receiver.url,
        "PAYLIVE_MERCHANT_WEBHOOK_SECRET": RECEIVER_SECRET,
        "PAYLIVE_MERCHANT_EVENTS": "all",
        "PAYLIVE_MERCHANT_WEBHOOK_TIMEOUT_MS": "1000",
        "PAYLIVE_MERCHANT_RETRY_MS": "50",
        "PAYLIVE_MERCHANT_RETRY_FOR_MS": "1000",
    }
    receiver.set(fail=10_000, status=500)
    try:
        async with behind_proxy(tmp_path, webhooks) as (proxy, http):
            sid = str((await create(http, amount=100, order_id="order-keyed-resend"))["id"])
            cancel = await http.post(f"/api/sessions/{sid}/cancel", headers=merchant())
            assert cancel.status_code == 200, cancel.text

            async def failed() -> list[dict[str, Any]]:
                reply = await http.get("/api/admin/deliveries?status=open", headers=admin())
                return [
                    d
                    for d in reply.json()["deliveries"]
                    if d["session"] == sid and d["status"] == "failed"
                ]

            [delivery] = await until(failed, WAIT_S)
            event_id = delivery["id"]
            receiver.set(fail=0)
            url = f"/api/admin/deliveries/{event_id}/retry"

            def taken() -> list[dict[str, Any]]:
                seen = receiver.seen()["arrivals"]
                return [a for a in seen if a.get("id") == event_id and a["answered"] == 200]

            async def posted() -> None:
                await until(taken, WAIT_S)

            # Sent again once the shop took the event the first request queued.
            answer = await lost_then_sent_again(
                http, proxy, url, None, "resend-1", b"send_again", posted
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["delivery"]["id"] == event_id
            assert answer.json()["delivery"]["status"] == "delivered"
            headers = {**admin(), "Idempotency-Key": "resend-1"}
            assert (await http.post(url, headers=headers)).json() == answer.json()

            async def settled() -> bool:
                # Posted and recorded (a second "send again" would first be pending).
                reply = await http.get("/api/admin/deliveries?status=all", headers=admin())
                [record] = [d for d in reply.json()["deliveries"] if d["id"] == event_id]
                return bool(record["status"] == "delivered")

            await until(settled, WAIT_S)
            assert len(taken()) == 1, "the shop got the event twice"
            entries = await trail(http, "send_again")
            assert [e["session"] for e in entries] == [sid], entries
    finally:
        receiver.set(fail=0)
