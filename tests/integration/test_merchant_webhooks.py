"""Signed merchant webhooks and the events API, against a real receiver (docs/protocol.md 6).

The receiver is a Starlette app in its own uvicorn process (tests/support/receiver.py):
it verifies every webhook with the ``standardwebhooks`` library and de-duplicates by event id, and
is told to fail for a while, to answer slowly, or to fail until paylive gives up.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from paylive.core import standard_webhooks
from paylive.core.signature import SignatureError

from ..support import redisproc
from ..support.client import admin, create, merchant, sandbox_outage
from ..support.postgres import Database
from ..support.receiver import Receiver
from ..support.servers import Server
from ..support.waiting import until

pytestmark = pytest.mark.anyio

# Standard Webhooks secrets: whsec_ and the base64 of 24 random bytes.
NEW_SECRET = "whsec_" + base64.b64encode(b"new-merchant-secret-0123").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"old-merchant-secret-0123").decode()
JS = Path(__file__).resolve().parents[1] / "js"
OK_CARD = {"payment_method": {"card": "4242424242424242"}}

# The shop has not rotated yet: it knows only the old secret.
RECEIVER_SECRET = OLD_SECRET


def SERVER_ENV(request: pytest.FixtureRequest) -> dict[str, str]:
    return webhooks_env(request.getfixturevalue("receiver"))


def webhooks_env(receiver: Receiver) -> dict[str, str]:
    return {
        "PAYLIVE_MERCHANT_WEBHOOK_URL": receiver.url,
        "PAYLIVE_MERCHANT_WEBHOOK_SECRET": f"{NEW_SECRET},{OLD_SECRET}",
        "PAYLIVE_MERCHANT_EVENTS": "all",
        # Short, but with room for a loaded machine (the suite runs files in parallel):
        # an answer within 1 s is a delivery, and retries go on for 5 s before giving up.
        "PAYLIVE_MERCHANT_WEBHOOK_TIMEOUT_MS": "1000",
        "PAYLIVE_MERCHANT_RETRY_MS": "50",
        "PAYLIVE_MERCHANT_RETRY_FOR_MS": "5000",
        # The sandbox answers after 500 ms, time enough to cancel first; a refund is
        # tried again every 200 to 400 ms.
        "PAYLIVE_SANDBOX_DELAY_MS": "500",
        # A loaded machine must not turn the sandbox's answer into a timeout (an extra
        # session.updated for the interruption): the deadline is well past it.
        "PAYLIVE_ATTEMPT_TIMEOUT_MS": "5000",
        "PAYLIVE_EFFECT_RETRY_BASE_MS": "200",
        "PAYLIVE_EFFECT_RETRY_CAP_MS": "400",
    }


def processed(receiver: Receiver, session_id: str) -> list[dict[str, Any]]:
    return [e for e in receiver.seen()["processed"] if e["session"]["id"] == session_id]


def arrivals(receiver: Receiver, session_id: str) -> list[dict[str, Any]]:
    return [a for a in receiver.seen()["arrivals"] if a.get("session") == session_id]


async def deliveries(http: httpx.AsyncClient, which: str = "all") -> list[dict[str, Any]]:
    reply = await http.get(f"/api/admin/deliveries?status={which}", headers=admin())
    assert reply.status_code == 200, reply.text
    return reply.json()["deliveries"]  # type: ignore[no-any-return]


async def paid(http: httpx.AsyncClient, order: str) -> str:
    session = await create(http, order_id=order)
    reply = await http.post(
        f"/api/sessions/{session['id']}/attempts", json=OK_CARD, headers=merchant()
    )
    assert reply.status_code == 202
    return str(session["id"])


async def cancelled(http: httpx.AsyncClient, order: str) -> str:
    session = await create(http, order_id=order)
    reply = await http.post(f"/api/sessions/{session['id']}/cancel", headers=merchant())
    assert reply.status_code == 200
    return str(session["id"])


async def test_down_for_a_while_then_everything_in_order(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.set(fail=4, status=503)
    paid_id = await paid(http, "order-wh-1")
    cancelled_id = await cancelled(http, "order-wh-2")

    def done() -> bool:
        return any(e["type"] == "session.succeeded" for e in processed(receiver, paid_id)) and any(
            e["type"] == "session.cancelled" for e in processed(receiver, cancelled_id)
        )

    await until(done, timeout=20)
    seen = receiver.seen()["arrivals"]
    assert sum(1 for a in seen if a["answered"] == 503) == 4
    # Signed with both secrets while rotating; the shop's old one verified each.
    assert all(a["verified"] and a["signatures"] == 2 for a in seen)

    # In order per session: no event is posted before the one before it was accepted.
    for session_id, expected in (
        (paid_id, ["session.updated", "session.succeeded"]),
        (cancelled_id, ["session.cancelled"]),
    ):
        mine = arrivals(receiver, session_id)
        seqs = [a["seq"] for a in mine]
        assert seqs == sorted(seqs)
        assert [e["type"] for e in processed(receiver, session_id)] == expected
        # A try the receiver accepted after paylive stopped waiting for its answer is
        # made again (at least once; the shop dedupes by webhook-id, as "processed"
        # does): a seq may be accepted twice, never before the one before it.
        accepted = [a["seq"] for a in mine if a["answered"] == 200]
        assert accepted == sorted(accepted) and accepted[0] == seqs[0], mine
    body = processed(receiver, paid_id)[-1]
    assert set(body) == {"id", "type", "created", "session", "seq", "cause", "previous"}
    assert body["session"]["status"] == "succeeded" and body["seq"] == body["session"]["seq"]

    listed = {d["id"]: d for d in await deliveries(http)}
    mine = [d for d in listed.values() if d["session"] in (paid_id, cancelled_id)]
    assert len(mine) == 3 and all(d["status"] == "delivered" for d in mine)
    # The four refusals and the three acceptances are counted, and so is any answer
    # slower than the timeout or any try that never reached the receiver (a kept-alive
    # connection it had closed). A try whose answer the session could not record (saved
    # meanwhile by the payment's own progress, seen on a loaded machine) is posted again
    # uncounted: the receiver may see one more than the count, never fewer than 3 + 4.
    tries = arrivals(receiver, paid_id) + arrivals(receiver, cancelled_id)
    assert sum(d["attempts"] for d in mine) >= 3 + 4 and len(tries) >= 3 + 4
    assert all(d["last_status"] == 200 and d["delivered_at"] for d in mine)


async def test_a_slow_answer_is_sent_again_and_the_shop_deduplicates(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.set(slow=1, slow_ms=2500)  # past the 1 s timeout
    session_id = await cancelled(http, "order-wh-slow")
    await until(lambda: len(arrivals(receiver, session_id)) >= 2)
    first, second = arrivals(receiver, session_id)[:2]
    assert first["id"] == second["id"] and first["answered"] == "slow"
    assert len(processed(receiver, session_id)) == 1  # answered twice, done once

    async def delivered() -> list[dict[str, Any]]:
        return [
            d
            for d in await deliveries(http)
            if d["id"] == first["id"] and d["status"] == "delivered"
        ]

    [delivery] = await until(delivered)
    assert delivery["attempts"] == 2 and delivery["last_status"] == 200


async def delivered_of(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    return [
        d
        for d in await deliveries(http)
        if d["session"] == session_id and d["status"] == "delivered"
    ]


async def test_a_2xx_whose_body_keeps_coming_is_accepted_at_once(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    # The shop did its work and answered 200, then its body kept coming (a framework's
    # debug page, a proxy streaming something): the answer is the status, the body is
    # not waited for nor kept whole in memory, and the event is not posted again.
    receiver.set(fail=0, slow=0, endless=1)
    session_id = await cancelled(http, "order-wh-endless")
    [delivery] = await until(lambda: delivered_of(http, session_id))
    assert delivery["attempts"] == 1 and delivery["last_status"] == 200, delivery
    assert [a["answered"] for a in arrivals(receiver, session_id)] == ["endless"]


async def test_a_redirect_is_a_failed_try_and_is_not_followed(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    # A guard: the shop registers the URL that answers; a 307 (which keeps the POST and
    # its body) is retried at the registered URL, never posted where it points.
    receiver.set(fail=0, slow=0, redirect=1)
    session_id = await cancelled(http, "order-wh-redirect")
    [delivery] = await until(lambda: delivered_of(http, session_id))
    assert delivery["attempts"] == 2 and delivery["last_status"] == 200, delivery
    assert [a["answered"] for a in arrivals(receiver, session_id)] == [307, 200]
    assert delivery["id"] not in receiver.seen()["elsewhere"]


async def test_given_up_after_the_retry_window_then_sent_again(receiver: Receiver) -> None:
    # A server of its own whose window is shorter than the module's: the test waits it
    # out, where the others must never reach it on a loaded machine.
    # 4 s: three tries fit in it with room (at 1 s a starved server once made two, and
    # at 2 s, under the parallel suite on two slow cores, one).
    env = {**webhooks_env(receiver), "PAYLIVE_MERCHANT_RETRY_FOR_MS": "4000"}
    with Server(env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            await given_up_then_sent_again(http, receiver)


async def given_up_then_sent_again(http: httpx.AsyncClient, receiver: Receiver) -> None:
    receiver.set(fail=10_000, status=500)
    session_id = await cancelled(http, "order-wh-fail")

    async def failed() -> list[dict[str, Any]]:
        return [
            d
            for d in await deliveries(http, "open")
            if d["session"] == session_id and d["status"] == "failed"
        ]

    [delivery] = await until(failed, timeout=30)  # given up after the 4 s window
    assert delivery["last_status"] == 500 and delivery["last_error"] == "HTTP 500"
    assert delivery["attempts"] >= 3 and delivery["next_at"] is None
    assert processed(receiver, session_id) == []

    receiver.set(fail=0)
    for headers in ({}, merchant()):
        refused = await http.post(f"/api/admin/deliveries/{delivery['id']}/retry", headers=headers)
        assert refused.status_code in (401, 403)
    missing = await http.post("/api/admin/deliveries/evt_nope_1_cancelled/retry", headers=admin())
    assert missing.status_code == 404
    again = await http.post(f"/api/admin/deliveries/{delivery['id']}/retry", headers=admin())
    assert again.status_code == 202, again.text
    assert (
        again.json()["delivery"]["status"] == "pending" and again.json()["delivery"]["resent"] == 1
    )
    await until(lambda: processed(receiver, session_id))
    assert [e["id"] for e in processed(receiver, session_id)] == [delivery["id"]]
    assert not [d for d in await deliveries(http, "open") if d["session"] == session_id]
    failures = metric(
        (await http.get("/metrics")).text, 'paylive_webhook_attempts_total{outcome="failed"}'
    )
    assert failures >= delivery["attempts"]


async def test_send_again_of_a_forgotten_session_posts_one_at_a_time(
    receiver: Receiver, fresh_redis: redisproc.RedisProc, db: Database
) -> None:
    # The engine forgot the session, so "send again" posts the event at once from its
    # delivery record. Two clicks together (two staff, a double click) must not post it
    # twice at once: a shop handling one event id twice at once may do its work twice.
    env = {
        **webhooks_env(receiver),
        "PAYLIVE_REDIS_URL": fresh_redis.url,
        "PAYLIVE_DATABASE_URL": db.url,
        "PAYLIVE_REDIS_RETENTION_MS": "1000",
        "PAYLIVE_MERCHANT_RETRY_FOR_MS": "1000",
    }
    with Server(env) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            receiver.set(fail=10_000, status=500)
            session_id = await cancelled(http, "order-wh-forgotten")

            async def failed() -> list[dict[str, Any]]:
                return [
                    d
                    for d in await deliveries(http, "open")
                    if d["session"] == session_id and d["status"] == "failed"
                ]

            [delivery] = await until(failed, timeout=30)
            key = f"paylive:{{{session_id}}}:s"
            await until(
                lambda: redisproc.command(fresh_redis.port, "EXISTS", key) == b":0\r\n",
                timeout=15,
            )
            receiver.set(fail=0, slow=2, slow_ms=900)  # within the 1 s timeout
            url = f"/api/admin/deliveries/{delivery['id']}/retry"
            first, second = await asyncio.gather(
                http.post(url, headers=admin()), http.post(url, headers=admin())
            )
    answers = sorted([first.status_code, second.status_code])
    assert answers == [200, 409], (first.text, second.text)
    refused = first if first.status_code == 409 else second
    assert refused.json()["error"]["code"] == "delivery_pending", refused.text
    posts = [a for a in arrivals(receiver, session_id) if a["answered"] != 500]
    assert [a["beside"] for a in posts] == [0], posts


async def test_events_api_lists_every_event_in_order(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.set(fail=0, slow=0)
    session_id = await paid(http, "order-ev-1")

    async def listed(after: int = 0, limit: int = 1000) -> dict[str, Any]:
        reply = await http.get(f"/api/events?after={after}&limit={limit}", headers=merchant())
        assert reply.status_code == 200, reply.text
        return reply.json()  # type: ignore[no-any-return]

    async def succeeded() -> bool:
        return any(
            e["type"] == "session.succeeded" and e["session"]["id"] == session_id
            for e in (await listed())["events"]
        )

    await until(succeeded)
    everything = (await listed())["events"]
    cursors = [e["cursor"] for e in everything]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    assert len({e["id"] for e in everything}) == len(everything)
    # Page by page with the cursor: the same events, nothing twice, nothing skipped.
    paged: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await listed(after, 2)
        paged += page["events"]
        if not page["has_more"]:
            break
        after = page["next"]
    assert [e["id"] for e in paged][: len(everything)] == [e["id"] for e in everything]
    assert (await listed(cursors[-1]))["events"] == []

    for headers, status in ((None, 401), (admin(), 403)):
        reply = await http.get("/api/events", headers=headers)
        assert reply.status_code == status
    for query in ("after=-1", "after=x", "limit=0", "limit=1001", "after=²"):
        reply = await http.get(f"/api/events?{query}", headers=merchant())
        assert reply.status_code == 422, query


VOID_LOST = "4000000000000341"  # charged, and its first void is lost: a late success


def metric(text: str, line_start: str) -> float:
    return float(next(x for x in text.splitlines() if x.startswith(line_start)).split()[-1])


async def test_refunded_once_confirmed_and_review_resolved_by_staff(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.set(fail=0, slow=0)
    session = await create(http, order_id="order-wh-refund")
    sid = session["id"]
    pay = {"payment_method": {"card": VOID_LOST}}
    paying = await http.post(f"/api/sessions/{sid}/attempts", json=pay, headers=merchant())
    assert paying.status_code == 202, paying.text
    cancelled = await http.post(f"/api/sessions/{sid}/cancel", headers=merchant())
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # The provider is down while its late success is given back: down for longer than
    # the test needs, which ends the outage once it has seen the refund owed (a fixed
    # outage was waited out).
    await sandbox_outage(http, 60)

    def outcomes() -> list[str]:
        return [e["type"] for e in processed(receiver, sid) if e["type"] != "session.updated"]

    try:
        await until(lambda: "session.needs_review" in outcomes())
        owed = await http.get(f"/api/admin/effects?status=pending&session={sid}", headers=admin())
        assert [e["kind"] for e in owed.json()["effects"]] == ["refund"]
        assert "session.refunded" not in outcomes(), "decided is not refunded: not confirmed yet"
    finally:
        await sandbox_outage(http, 0)

    await until(lambda: "session.refunded" in outcomes(), timeout=20)
    [refunded] = [e for e in processed(receiver, sid) if e["type"] == "session.refunded"]
    assert refunded["cause"] == "effect_done" and refunded["effect"]["id"] == f"{sid}:1:refund"
    done = await http.get(f"/api/admin/effects?status=done&session={sid}", headers=admin())
    assert [e["kind"] for e in done.json()["effects"]] == ["refund"]

    resolved = await http.post(
        f"/api/admin/sessions/{sid}/review",
        json={"by": "ana", "note": "refund made"},
        headers=admin(),
    )
    assert resolved.status_code == 200, resolved.text
    await until(lambda: "session.review_resolved" in outcomes())
    assert outcomes() == [
        "session.cancelled",
        "session.needs_review",
        "session.refunded",
        "session.review_resolved",
    ]
    seqs = [e["seq"] for e in processed(receiver, sid)]
    assert seqs == sorted(seqs)
    text = (await http.get("/metrics")).text
    assert metric(text, 'paylive_webhook_attempts_total{outcome="ok"}') >= 4

    async def nothing_owed() -> bool:
        return metric((await http.get("/metrics")).text, "paylive_deliveries_pending") == 0

    await until(nothing_owed)  # the gauge follows within a second (the summary loop)


async def test_webhooks_verify_with_standard_webhooks_in_python_and_node(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    """A webhook paylive posted verifies with the standardwebhooks libraries; the same
    webhook with its body changed, or signed ten minutes ago, does not."""
    session_id = await cancelled(http, "order-wh-standard")

    def posted() -> dict[str, Any] | None:
        for kept in reversed(receiver.seen()["raw"]):
            body = base64.b64decode(kept["body"])
            if json.loads(body)["session"]["id"] == session_id:
                return kept  # type: ignore[no-any-return]
        return None

    kept = await until(posted)
    body = base64.b64decode(kept["body"])
    headers = kept["headers"]
    assert headers["webhook-id"] == json.loads(body)["id"]
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    # Signed with both secrets while rotating: two space-separated v1 signatures.
    assert [s[:3] for s in headers["webhook-signature"].split(" ")] == ["v1,", "v1,"]

    tampered = body.replace(b'"cancelled"', b'"succeeded"', 1)
    assert tampered != body
    old = int(time.time()) - 600
    stale = standard_webhooks.headers([NEW_SECRET, OLD_SECRET], headers["webhook-id"], old, body)
    cases = {"genuine": (body, headers), "tampered": (tampered, headers), "stale": (body, stale)}

    # Python: the standardwebhooks package on PyPI, and paylive's own helper.
    library = Webhook(OLD_SECRET)
    assert library.verify(body, headers)["id"] == headers["webhook-id"]
    for name in ("tampered", "stale"):
        with pytest.raises(WebhookVerificationError):
            library.verify(*cases[name])
    now = int(time.time())
    assert standard_webhooks.verify(headers, body, [OLD_SECRET], now) == headers["webhook-id"]
    for name in ("tampered", "stale"):
        with pytest.raises(SignatureError):
            standard_webhooks.verify(cases[name][1], cases[name][0], [OLD_SECRET], now)

    # Node: the standardwebhooks package on npm (tests/js).
    results = node_verify(
        NEW_SECRET,
        [
            {"name": name, "body": base64.b64encode(raw).decode(), "headers": sent}
            for name, (raw, sent) in cases.items()
        ],
    )
    assert results["genuine"] == "ok", results
    assert "No matching signature" in results["tampered"], results
    assert "too old" in results["stale"], results


async def test_a_body_beyond_ascii_verifies_as_sent_with_either_secret_alone(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    """A guard: the signed bytes are the bytes sent, whatever the shop's metadata holds
    (UTF-8 beyond ASCII, a character JavaScript once took for a line end, quotes), and
    while rotating each secret alone verifies the webhook in Python and in Node."""
    receiver.set(fail=0, slow=0)
    note = 'Crème brûlée – 寿司 🍣 \u2028 "quoted" \\ end'
    session = await create(http, order_id="order-wh-utf8", metadata={"note": note})
    reply = await http.post(f"/api/sessions/{session['id']}/cancel", headers=merchant())
    assert reply.status_code == 200

    def posted() -> dict[str, Any] | None:
        for kept in reversed(receiver.seen()["raw"]):
            if json.loads(base64.b64decode(kept["body"]))["session"]["id"] == session["id"]:
                return kept  # type: ignore[no-any-return]
        return None

    kept = await until(posted)
    body, headers = base64.b64decode(kept["body"]), kept["headers"]
    assert "寿司 🍣".encode() in body  # sent as UTF-8, as signed
    for secret in (NEW_SECRET, OLD_SECRET):
        event = Webhook(secret).verify(body, headers)
        assert event["session"]["metadata"] == {"note": note}
        # A shop that hands its framework's decoded text to the library verifies too.
        assert Webhook(secret).verify(body.decode(), headers)["id"] == headers["webhook-id"]
    case = [{"name": "utf8", "body": kept["body"], "headers": headers}]
    for secret in (NEW_SECRET, OLD_SECRET):
        assert node_verify(secret, case) == {"utf8": "ok"}


def node_verify(secret: str, cases: list[dict[str, Any]]) -> dict[str, str]:
    node = shutil.which("node")
    library = JS / "node_modules" / "standardwebhooks"
    if node is None or not library.exists():
        what = "node" if node is None else "tests/js's standardwebhooks (npm ci --prefix tests/js)"
        if os.environ.get("PAYLIVE_REQUIRE_NODE") == "1":
            pytest.fail(f"{what} is missing (PAYLIVE_REQUIRE_NODE=1)")
        pytest.skip(f"{what} is missing")
    done = subprocess.run(
        [node, "verify_webhooks.mjs"],
        cwd=JS,
        input=json.dumps({"secret": secret, "cases": cases}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]
