"""Overload is refused at the door, and what was accepted is finished and delivered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from ..support.client import Socket, create, merchant, open_socket, session_url
from ..support.redisproc import REDIS_SERVER, RedisProc
from ..support.servers import ADMIN_TOKEN, Server
from ..support.waiting import until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
]

NEVER = "4000000000000408"
DURABLE_TYPES = ("state", "retry_prompt")
PAY = {"payment_method": {"card": NEVER}}
# Attempts never time out, a retry may follow at once, and a session takes many.
LONG_LIVED = {
    "PAYLIVE_ATTEMPT_TIMEOUT_MS": "600000",
    "PAYLIVE_RETRY_DELAY_MS": "0",
    "PAYLIVE_MAX_ATTEMPTS": "20",
}


async def test_a_command_refused_for_overload_changes_nothing(fresh_redis: RedisProc) -> None:
    """One command in flight fills a door of one (Redis is frozen under it); the next
    is refused at once with 503 ``overloaded`` and Retry-After, over HTTP and on a
    socket, and leaves the session and its idempotency key untouched."""
    env = {
        "PAYLIVE_REDIS_URL": fresh_redis.url,
        "PAYLIVE_MAX_IN_FLIGHT": "1",
        "PAYLIVE_REDIS_TIMEOUT_MS": "5000",
        **LONG_LIVED,
    }
    with Server(env) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
            busy, quiet = await create(http), await create(http)
            sock = await open_socket(session_url(srv.ws_url, quiet))
            assert (await sock.recv())["type"] == "snapshot"
            keyed = {**merchant(), "Idempotency-Key": "pay-quiet-1"}
            fresh_redis.pause()
            try:
                async with anyio.create_task_group() as tg:
                    answers: list[httpx.Response] = []

                    async def hold() -> None:
                        url = f"/api/sessions/{busy['id']}/attempts"
                        answers.append(await http.post(url, json=PAY, headers=merchant()))

                    tg.start_soon(hold)
                    # In flight, waiting for the frozen Redis.
                    await until(lambda: _in_flight(srv.url) == 1)
                    refused = await http.post(
                        f"/api/sessions/{quiet['id']}/attempts", json=PAY, headers=keyed
                    )
                    await sock.send({"type": "pay", "payment_method": PAY["payment_method"]})
                    error = await sock.until(lambda m: m["type"] == "error")
                    fresh_redis.resume()
            finally:
                fresh_redis.resume()
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "overloaded"
            assert int(refused.headers["retry-after"]) >= 1
            assert error["data"]["code"] == "overloaded"
            assert answers[0].status_code == 202, answers[0].text  # accepted work finished

            # Nothing changed: the session is as created, the socket saw no event, and
            # the idempotency key was not taken (the same request now runs).
            got = await http.get(f"/api/sessions/{quiet['id']}", headers=merchant())
            assert got.json()["status"] == "created" and got.json()["seq"] == 0
            assert sock.durable() == []
            again = await http.post(
                f"/api/sessions/{quiet['id']}/attempts", json=PAY, headers=keyed
            )
            assert again.status_code == 202, again.text
            assert (await sock.state("processing"))["seq"] == 1
            await sock.conn.close()


async def test_past_its_limit_a_worker_delivers_every_accepted_change(
    fresh_redis: RedisProc,
) -> None:
    """Many clients at once on a worker that takes two commands at a time: some are
    refused, and every event of every accepted change reaches the session's socket
    and the admin feed, in order, with no snapshot in between."""
    env = {"PAYLIVE_REDIS_URL": fresh_redis.url, "PAYLIVE_MAX_IN_FLIGHT": "2", **LONG_LIVED}
    sessions_n, changes_per_session = 16, 8
    with Server(env) as srv:
        async with httpx.AsyncClient(
            base_url=srv.url, timeout=10, limits=httpx.Limits(max_connections=sessions_n)
        ) as http:
            sessions = [await create(http) for _ in range(sessions_n)]
            feed = await open_socket(f"{srv.ws_url}/ws/admin?token={ADMIN_TOKEN}")
            assert (await feed.recv())["type"] == "admin.snapshot"
            socks: dict[str, Socket] = {}
            for session in sessions:
                socks[session["id"]] = await open_socket(session_url(srv.ws_url, session))
                assert (await socks[session["id"]].recv())["type"] == "snapshot"
            final: dict[str, int] = {}
            refused = 0

            async def drive(session: dict[str, Any]) -> None:
                nonlocal refused
                url, status, done = f"/api/sessions/{session['id']}", "created", 0
                deadline = time.monotonic() + 30
                while done < changes_per_session and time.monotonic() < deadline:
                    if status == "processing":
                        call = http.post(
                            url + "/interrupt", json={"reason": "network_error"}, headers=merchant()
                        )
                    else:
                        call = http.post(url + "/attempts", json=PAY, headers=merchant())
                    reply = await call
                    if reply.status_code == 503:
                        assert reply.json()["error"]["code"] == "overloaded", reply.text
                        refused += 1
                        await anyio.sleep(0.005)
                        continue
                    assert reply.is_success, reply.text
                    status, done = reply.json()["status"], done + 1
                    final[session["id"]] = reply.json()["seq"]

            async with anyio.create_task_group() as tg:
                for session in sessions:
                    tg.start_soon(drive, session)
            assert refused > 0, "the worker was never driven past its limit"
            assert len(final) == sessions_n

            for session_id, last in final.items():
                sock = socks[session_id]
                await sock.until(
                    lambda m, last=last: m["type"] in DURABLE_TYPES and m["seq"] == last
                )
                seqs = [m["seq"] for m in sock.durable()]
                assert seqs == list(range(1, last + 1)), (session_id, seqs)
                assert sock.types().count("snapshot") == 1
                await sock.conn.close()
            expected = sum(final.values())
            with anyio.fail_after(15):
                while len(feed.durable()) < expected:
                    await feed.recv()
            by_session: dict[str, list[int]] = {}
            for message in feed.durable():
                by_session.setdefault(message["session"], []).append(message["seq"])
            for session_id, last in final.items():
                assert by_session[session_id] == list(range(1, last + 1)), session_id
            await feed.conn.close()


def _in_flight(url: str) -> float:
    page = httpx.get(url + "/metrics", timeout=5).text
    for line in page.splitlines():
        if line.startswith("paylive_in_flight "):
            return float(line.split()[1])
    return 0.0


async def test_a_refused_command_is_answered_before_its_body_and_changes_nothing(
    fresh_redis: RedisProc,
) -> None:
    """While the door is full, a command is refused from its request line and headers:
    the 503 comes back although not one byte of its body was sent (so nothing read
    it), the body sent afterwards is dropped, the connection still serves the next
    request, and the session the command would have created does not exist."""
    env = {
        "PAYLIVE_REDIS_URL": fresh_redis.url,
        "PAYLIVE_MAX_IN_FLIGHT": "1",
        "PAYLIVE_REDIS_TIMEOUT_MS": "5000",
        **LONG_LIVED,
    }
    body = b'{"order_id": "refused-order", "amount": 500, "currency": "EUR"}'
    head = (
        b"POST /api/sessions HTTP/1.1\r\nHost: test\r\n"
        + b"Authorization: " + merchant()["Authorization"].encode() + b"\r\n"
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
    )  # fmt: skip
    with Server(env) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
            busy = await create(http)
            fresh_redis.pause()
            try:
                async with anyio.create_task_group() as tg:

                    async def hold() -> None:
                        url = f"/api/sessions/{busy['id']}/attempts"
                        await http.post(url, json=PAY, headers=merchant())

                    tg.start_soon(hold)
                    await until(lambda: _in_flight(srv.url) == 1)
                    stream = await anyio.connect_tcp("127.0.0.1", srv.port)
                    async with stream:
                        await stream.send(head)  # the headers, and no body at all
                        with anyio.fail_after(3):
                            answer = await _read_answer(stream)
                        assert answer.startswith(b"HTTP/1.1 503"), answer
                        assert b'"overloaded"' in answer and b"retry-after: 1" in answer
                        # The body comes late: it is dropped, and the connection still
                        # serves the next request.
                        await stream.send(body)
                        fresh_redis.resume()
                        await stream.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
                        with anyio.fail_after(5):
                            nxt = await _read_answer(stream)
                        assert nxt.startswith(b"HTTP/1.1 200"), nxt
            finally:
                fresh_redis.resume()
            # Refused by the connection protocol itself: no task was made for it.
            page = (await http.get("/metrics")).text
            assert "paylive_refused_before_body_total 1.0" in page
            listed = await http.get(
                "/api/admin/sessions?status=all", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            assert listed.status_code == 200, listed.text
            orders = [s["order_id"] for s in listed.json()["sessions"]]
            assert busy["order_id"] in orders and "refused-order" not in orders


async def _read_answer(stream: anyio.abc.SocketStream) -> bytes:
    """One HTTP answer with a Content-Length body, read whole."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        raw += await stream.receive()
    head, _, rest = raw.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(rest) < length:
        rest += await stream.receive()
    return head + b"\r\n\r\n" + rest


@pytest.fixture(scope="module")
def two_places() -> Iterator[Server]:
    """A worker of two places, fixed, that the cases below share: each ends with both
    places free again, which is what the next one starts from (a place a case kept
    fails that case, or the next if it was given back late)."""
    with Server({"PAYLIVE_MAX_IN_FLIGHT": "2", "PAYLIVE_ADAPTIVE_IN_FLIGHT": "0"}) as srv:
        yield srv


@pytest.mark.parametrize("case", ["one", "pipelined", "upgrade", "pipelined_upgrade"])
async def test_commands_cut_off_on_the_way_in_give_their_places_back(
    case: str, two_places: Server
) -> None:
    """A command holds a place from the moment the worker has it whole: commands whose
    connection closes before or while they run, commands pipelined behind them, and a
    command that asks for a socket upgrade give them all back, so the worker still
    accepts work afterwards (two places, fixed)."""
    srv = two_places
    body = b'{"order_id": "cut-off", "amount": 500, "currency": "EUR"}'
    one = (
        b"POST /api/sessions HTTP/1.1\r\nHost: test\r\n"
        + b"Authorization: " + merchant()["Authorization"].encode() + b"\r\n"
        + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body
    )  # fmt: skip
    upgrade = one.replace(b"Host: test\r\n", b"Host: test\r\nConnection: Upgrade\r\n"
                          b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n")  # fmt: skip
    payload = {
        "one": one,
        "pipelined": one * 3,
        "upgrade": upgrade,
        "pipelined_upgrade": one * 2 + upgrade,
    }[case]
    for _ in range(4):
        stream = await anyio.connect_tcp("127.0.0.1", srv.port)
        await stream.send(payload)
        await stream.aclose()  # gone before any answer
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:

        async def accepted() -> bool:
            answer = await http.post(
                "/api/sessions",
                json={"order_id": "after", "amount": 500, "currency": "EUR"},
                headers=merchant(),
            )
            return answer.status_code in (200, 201)

        # What was cut off finishes or is dropped within moments (else a place was kept
        # by a command that is gone); then two at once fit.
        await until(accepted, timeout=10)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                results: list[bool] = []

                async def one_more() -> None:
                    results.append(await accepted())

                for _ in range(2):
                    tg.start_soon(one_more)
        assert results == [True, True], results
        assert "paylive_in_flight 0.0" in (await http.get("/metrics")).text
