"""What a customer's channels say of a gateway effect (docs/protocol.md 4.1, v1.1 of
2026-12-07), against a real ``paylive serve``: a staff refund that the provider keeps
refusing, then marked done by hand with a note. The checkout's socket (JSON and
msgpack), event stream, long-poll and a ``since`` replay carry the effect's kind,
status, amount, id and times, never the staff member's name, their note nor the
provider's error text; the admin feed, and staff watching the session, still carry
everything."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ..support.asyncapi import check
from ..support.client import admin, create, open_socket, session_url
from ..support.redisproc import REDIS_SERVER, RedisProc
from ..support.servers import ADMIN_TOKEN, Server
from ..support.sse import Stream
from ..support.waiting import until

pytestmark = pytest.mark.anyio

STAFF = "otto.staff-7q"
OPERATOR = "operator-token-0123456789"
NOTE = "Refunded in the provider's dashboard, ticket 5521"
OK = "4242424242424242"
WAIT_S = 15.0

ENGINES = [
    "memory",
    pytest.param(
        "redis",
        marks=pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
    ),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # On both engines: Redis hands events through pub/sub and replays its own history.
    if "server" in metafunc.fixturenames:
        metafunc.parametrize("server", ENGINES, indirect=True, scope="module")


def SERVER_ENV(request: pytest.FixtureRequest) -> dict[str, str]:
    env = {
        "PAYLIVE_STAFF_TOKENS": f"{STAFF}:operator:{OPERATOR}",
        "PAYLIVE_EFFECT_RETRY_BASE_MS": "100",
        "PAYLIVE_EFFECT_RETRY_CAP_MS": "400",
        "PAYLIVE_POLL_HOLD_MS": "2000",
    }
    if request.param == "redis":
        redis: RedisProc = request.getfixturevalue("redis")
        env["PAYLIVE_REDIS_URL"] = redis.url
    return env


# What a customer's effect holds (docs/protocol.md 4.1): the rest is staff's.
CUSTOMER_FIELDS = {
    "id",
    "session",
    "attempt",
    "kind",
    "status",
    "created_at",
    "done_at",
    "number",
    "amount",
    "reason",
}
STAFF_FIELDS = {"requested_by", "done_by", "note", "last_error", "tries", "next_at"}


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def effects_of(messages: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each effect-bearing state's effect, by its cause."""
    return {
        m["data"]["cause"]: m["data"]["effect"]
        for m in messages
        if m["type"] == "state" and "effect" in m["data"]
    }


def leaks(messages: list[dict[str, Any]], provider_error: str, where: str) -> list[str]:
    """What a customer's channel ``where`` got that it should not have (each channel is
    checked before the test fails, so that a failure names every one)."""
    found = []
    effects = effects_of(messages)
    if set(effects) != {"refund_requested", "effect_done"}:
        return [f"{where}: the effect events were {sorted(effects)}"]
    for cause, effect in effects.items():
        extra = sorted(set(effect) - CUSTOMER_FIELDS)
        if extra:
            found.append(f"{where}: {cause} carries {extra}")
        if (effect["kind"], effect["amount"], effect["number"]) != ("refund", 100, 1):
            found.append(f"{where}: {cause} lost what the customer may see: {effect}")
    done = effects["effect_done"]
    if done["status"] != "done" or done["done_at"] is None:
        found.append(f"{where}: effect_done is not done: {done}")
    # Nowhere in what the customer got, not only not under its own key.
    said = json.dumps(messages, ensure_ascii=False)
    for secret in (STAFF, NOTE, provider_error):
        if secret in said:
            found.append(f"{where}: says {secret!r}")
    return found


async def paid(http: httpx.AsyncClient) -> dict[str, Any]:
    session = await create(http, amount=100)
    reply = await http.post(
        f"/api/sessions/{session['id']}/attempts",
        json={"payment_method": {"card": OK}},
        headers=bearer(session["client_secret"]),
    )
    assert reply.status_code == 202, reply.text
    return session


@contextlib.asynccontextmanager
async def event_stream(
    http: httpx.AsyncClient, sid: str, credential: str, **params: Any
) -> AsyncIterator[Stream]:
    path = f"/api/sessions/{sid}/stream"
    async with http.stream("GET", path, params=params, headers=bearer(credential)) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        yield Stream(response)


async def refund_done_by_hand(http: httpx.AsyncClient, sid: str) -> str:
    """A staff refund the provider refuses (its outage) until staff mark it done by hand
    with a note; the provider's error text, as staff read it."""
    down = await http.post("/api/admin/sandbox/outage", json={"seconds": 30}, headers=admin())
    assert down.status_code == 200, down.text
    try:
        made = await http.post(
            f"/api/sessions/{sid}/refunds", json={"amount": 100}, headers=bearer(OPERATOR)
        )
        assert made.status_code == 202, made.text
        effect_id = made.json()["refund"]["id"]
        tried: dict[str, Any] = {}

        async def failed_once() -> bool:
            reply = await http.get(
                f"/api/admin/effects?session={sid}&status=pending", headers=admin()
            )
            found = reply.json()["effects"]
            if found and found[0]["tries"] >= 1:
                tried.update(found[0])
            return bool(tried)

        await until(failed_once, WAIT_S)
        assert tried["requested_by"] == STAFF and tried["last_error"], tried
        done = await http.post(
            f"/api/admin/effects/{effect_id}/done", json={"note": NOTE}, headers=bearer(OPERATOR)
        )
        assert done.status_code == 200, done.text
        return str(tried["last_error"])
    finally:
        await http.post("/api/admin/sandbox/outage", json={"seconds": 0}, headers=admin())


async def test_customer_channels_carry_no_staff_text_and_staff_still_do(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session = await paid(http)
        sid, secret = session["id"], session["client_secret"]
        as_json = await open_socket(session_url(server.ws_url, session))
        await as_json.state("succeeded")
        paid_seq = as_json.received[-1]["seq"]
        as_msgpack = await open_socket(session_url(server.ws_url, session, paid_seq), binary=True)
        watching = await open_socket(session_url(server.ws_url, session, paid_seq, ADMIN_TOKEN))
        feed = await open_socket(f"{server.ws_url}/ws/admin?token={ADMIN_TOKEN}")
        async with event_stream(http, sid, secret, since=paid_seq) as stream:
            provider_error = await refund_done_by_hand(http, sid)

            def by_hand(m: dict[str, Any]) -> bool:
                return m["type"] == "state" and m["data"].get("by_hand") is True

            for socket in (as_json, as_msgpack, watching):
                await socket.until(by_hand)
            await feed.until(lambda m: by_hand(m) and m["session"] == sid)
            await stream.until(lambda e: by_hand(e.data), WAIT_S)
            streamed = [e.data for e in stream.events]
        problems = leaks(as_json.received, provider_error, "json socket")
        problems += leaks(as_msgpack.received, provider_error, "msgpack socket")
        problems += leaks(streamed, provider_error, "event stream")

        # Replayed from the history, after the fact: a socket and a stream with since,
        # and a long-poll.
        replayed = await open_socket(session_url(server.ws_url, session, paid_seq), binary=True)
        await replayed.until(by_hand)
        problems += leaks(replayed.received, provider_error, "since replay (msgpack)")
        async with event_stream(http, sid, secret, since=paid_seq) as again:
            await again.until(lambda e: by_hand(e.data), WAIT_S)
            problems += leaks([e.data for e in again.events], provider_error, "stream replay")
        polled = await http.get(
            f"/api/sessions/{sid}/events", params={"since": paid_seq}, headers=bearer(secret)
        )
        assert polled.status_code == 200, polled.text
        problems += leaks(polled.json()["events"], provider_error, "long-poll")

        # Staff keep everything: the admin feed, and an admin token watching the session.
        for socket, where in ((feed, "admin feed"), (watching, "staff watching")):
            effects = effects_of([m for m in socket.received if m.get("session") == sid])
            assert effects["refund_requested"]["requested_by"] == STAFF, where
            done = effects["effect_done"]
            assert (done["done_by"], done["note"]) == (STAFF, NOTE), where
            assert done["last_error"] == provider_error and done["tries"] >= 1, where
        staff_poll = await http.get(
            f"/api/sessions/{sid}/events", params={"since": paid_seq}, headers=admin()
        )
        staff_effects = effects_of(staff_poll.json()["events"])
        assert staff_effects["effect_done"]["note"] == NOTE
        # The customer's HTTP read of the session never held the outbox.
        read = await http.get(f"/api/sessions/{sid}", headers=bearer(secret))
        assert "effects" not in read.json() and NOTE not in read.text and STAFF not in read.text
        for socket in (as_json, as_msgpack, watching, feed, replayed):
            await socket.conn.close()
        assert not problems, "\n".join(problems)
        # And each fits its channel's description (docs/asyncapi.yaml): the customer's
        # effect has no field beyond the customer's, staff's has theirs.
        customer_said = as_json.received + as_msgpack.received + replayed.received + streamed
        for message in customer_said + polled.json()["events"]:
            check(message, "customer")
        for message in feed.received + watching.received:
            check(message, "admin" if message["type"] != "snapshot" else "customer")


def test_the_fields_named_here_are_the_ones_the_server_has() -> None:
    # The check must be able to fail: a staff field the effect no longer has would make
    # its absence from the customer's view say nothing.
    from paylive.core.effects import GatewayEffect

    full = GatewayEffect("refund", 1, 0, 0, last_error="e", number=1, amount=1, reason="r")
    full = GatewayEffect(**{**full.to_record(), "requested_by": "s", "done_by": "s", "note": "n"})
    assert STAFF_FIELDS | CUSTOMER_FIELDS == set(full.to_public("ps_x"))
