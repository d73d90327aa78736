"""Server-Sent Events, long-polling and tickets (docs/protocol.md 4.2) against real
``paylive serve`` processes: one on the memory engine, and two workers on a real Redis
for resuming a stream on the other worker."""

from __future__ import annotations

import contextlib
import signal
import socket as socket_module
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from paylive.web.auth import ADMIN, VIEWER, Principal, make_ticket

from ..support.client import admin, create, open_socket
from ..support.servers import ADMIN_TOKEN, API_KEY, SECRET, Server
from ..support.sse import Stream, ticket

pytestmark = pytest.mark.anyio

SERVER_ENV = {
    "PAYLIVE_SSE_HEARTBEAT_MS": "300",
    "PAYLIVE_POLL_HOLD_MS": "3000",
    "PAYLIVE_MAX_SOCKETS_PER_SESSION": "3",
}

OK = "4242424242424242"
DECLINED = "4000000000000002"
NEVER = "4000000000000408"
# The smallest segment a TCP peer is expected to take (RFC 1122's default MSS).
SMALL_MSS = 536


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@contextlib.asynccontextmanager
async def stream(http: httpx.AsyncClient, path: str, **params: Any) -> AsyncIterator[Stream]:
    headers = params.pop("headers", {})
    async with http.stream("GET", path, params=params, headers=headers) as response:
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Stream(response)


async def pay(http: httpx.AsyncClient, session: dict[str, Any], card: str) -> None:
    reply = await http.post(
        f"/api/sessions/{session['id']}/attempts",
        json={"payment_method": {"card": card}},
        headers=bearer(session["client_secret"]),
    )
    assert reply.status_code == 202, reply.text


async def test_a_session_stream_carries_the_socket_messages_with_seq_as_id(
    server: Server,
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session = await create(http)
        path = f"/api/sessions/{session['id']}/stream"
        async with stream(http, path, ticket=await ticket(http, session["client_secret"])) as sse:
            first = await sse.next()
            assert first is not None and first.type == "snapshot" and first.id == "0"
            assert sse.retry is not None
            await pay(http, session, NEVER)
            processing = await sse.state("processing")
            assert processing.id == str(processing.data["seq"]) == "1"
            countdown = await sse.until(lambda e: e.type == "countdown")
            assert countdown.id is None  # not durable: it must not move Last-Event-ID
            assert (
                countdown.data["data"]["deadline"] == processing.data["data"]["session"]["deadline"]
            )
            await sse.state("interrupted")
            prompt = await sse.until(lambda e: e.type == "retry_prompt")
            assert prompt.id == str(prompt.data["seq"])
            assert prompt.data["data"]["outcome_unknown"] is True
            # Heartbeat comments keep an idle stream open.
            seen = sse.comments
            with contextlib.suppress(TimeoutError):
                await sse.next(1.0)
            assert sse.comments > seen
            ids = [int(e.id) for e in sse.durable() if e.id is not None]
            assert ids == list(range(1, len(ids) + 1))


async def test_a_stream_says_it_is_alive_with_pings_a_page_can_see(server: Server) -> None:
    """EventSource hands a page no comment: a ``ping`` event first and at every
    heartbeat, with its interval, is what lets a page tell a quiet stream from a dead
    one. The comment stays for proxies, and the messages are as before."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session = await create(http)
        path = f"/api/sessions/{session['id']}/stream"
        async with stream(http, path, headers=bearer(session["client_secret"])) as sse:
            first = await sse.next()
            assert first is not None and first.type == "snapshot"
            # The first ping came ahead of the first message.
            assert sse.pings[:1] == [{"interval_ms": 300}]
            comments = sse.comments
            with contextlib.suppress(TimeoutError):
                await sse.next(1.0)  # an idle stream: three heartbeats
            assert len(sse.pings) >= 3 and sse.comments > comments
            assert all(ping == {"interval_ms": 300} for ping in sse.pings)
        async with stream(http, "/api/admin/stream", headers=admin()) as feed:
            assert (await feed.next()) is not None
            assert feed.pings[:1] == [{"interval_ms": 300}]


async def test_a_staff_ticket_dies_with_its_token(server: Server) -> None:
    """A ticket is signed with PAYLIVE_SECRET, which outlives a staff token: one bought
    by a member since struck off the staff list (a restart with the list without
    them, the same PAYLIVE_SECRET) must not open a feed or watch a session in the
    seconds it has left. Minted here as that restart would find it."""
    expires_at = int(time.time() * 1000) + 20_000
    gone = make_ticket(SECRET, Principal(ADMIN, name="gone", role=VIEWER), expires_at)
    listed = make_ticket(SECRET, Principal(ADMIN, name="admin", role=ADMIN), expires_at)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        events = f"/api/sessions/{(await create(http))['id']}/events"
        refused = await http.get(events, params={"ticket": gone, "wait": 0})
        assert refused.status_code == 401, refused.text
        assert (await http.get("/api/admin/stream", params={"ticket": gone})).status_code == 401
        # The admin token's is still good: the refusal is the name's, not the minting's.
        assert (await http.get(events, params={"ticket": listed, "wait": 0})).status_code == 200


async def test_a_ticket_opens_once_and_only_its_session(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session = await create(http)
        other = await create(http)
        one = await ticket(http, session["client_secret"])
        path = f"/api/sessions/{session['id']}/stream"
        async with stream(http, path, ticket=one) as sse:
            assert (await sse.next()) is not None
        again = await http.get(path, params={"ticket": one})
        assert again.status_code == 401 and again.json()["error"]["code"] == "unauthorized"
        elsewhere = await http.get(
            f"/api/sessions/{other['id']}/stream",
            params={"ticket": await ticket(http, session["client_secret"])},
        )
        assert elsewhere.status_code == 403
        forged = one[:-4] + ("AAAA" if not one.endswith("AAAA") else "BBBB")
        assert (await http.get(path, params={"ticket": forged})).status_code == 401
        # The merchant key buys no ticket: streams are the customer's and staff's.
        reply = await http.post("/api/tickets", headers=bearer(API_KEY))
        assert reply.status_code == 403
        assert (await http.post("/api/tickets")).status_code == 401
        reply = await http.post(
            "/api/tickets", headers=bearer(session["client_secret"]), content=b"{nope"
        )
        assert reply.status_code == 400
        # The same ticket opens a socket, once.
        socket_ticket = await ticket(http, session["client_secret"])
        url = f"{server.ws_url}/ws/sessions/{session['id']}?ticket={socket_ticket}"
        sock = await open_socket(url)
        assert (await sock.recv())["type"] == "snapshot"
        await sock.conn.close()
        sock = await open_socket(url)
        assert await sock.close_code() == 4401


async def test_stream_refusals_are_clear_and_change_nothing(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session = await create(http)
        path = f"/api/sessions/{session['id']}/stream"
        reply = await http.get(path)
        assert reply.status_code == 401
        reply = await http.get(path, headers=bearer(API_KEY))
        assert reply.status_code == 403
        reply = await http.get(
            path, headers={**bearer(session["client_secret"]), "Last-Event-ID": "x1"}
        )
        assert reply.status_code == 422 and reply.json()["error"]["code"] == "invalid_field"
        reply = await http.get(
            "/api/sessions/ps_nope/stream", params={"ticket": await ticket(http, ADMIN_TOKEN)}
        )
        assert reply.status_code == 404
        # Past the per-session cap (3 here) the next stream is refused, 429.
        async with contextlib.AsyncExitStack() as open_streams:
            held = []  # a stream nobody refers to is closed by the garbage collector
            for _ in range(3):
                sse = await open_streams.enter_async_context(
                    stream(http, path, headers=bearer(session["client_secret"]))
                )
                assert (await sse.next()) is not None
                held.append(sse)
            reply = await http.get(path, headers=bearer(session["client_secret"]))
            assert reply.status_code == 429
            assert reply.json()["error"]["code"] == "too_many_sockets"
        fetched = await http.get(
            f"/api/sessions/{session['id']}", headers=bearer(session["client_secret"])
        )
        assert fetched.json()["seq"] == 0 and fetched.json()["status"] == "created"


async def test_last_event_id_past_the_history_gets_a_snapshot(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session = await create(http)
        await pay(http, session, OK)
        path = f"/api/sessions/{session['id']}/stream"
        headers = {**bearer(session["client_secret"]), "Last-Event-ID": "99"}
        async with stream(http, path, headers=headers) as sse:
            first = await sse.next()
            assert first is not None and first.type == "snapshot"
            assert first.id == str(first.data["seq"])


async def test_a_stream_ends_after_its_lifetime() -> None:
    with Server({"PAYLIVE_STREAM_LIFETIME_MS": "1000"}) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
            session = await create(http)
            path = f"/api/sessions/{session['id']}/stream"
            started = time.monotonic()
            async with stream(http, path, headers=bearer(session["client_secret"])) as sse:
                assert (await sse.next()) is not None
                assert (await sse.next(5.0)) is None  # ended by the server
            assert time.monotonic() - started < 4


async def test_the_admin_stream_is_the_admin_feed_without_ids(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        reply = await http.get(
            "/api/admin/stream",
            params={"ticket": await ticket(http, (await create(http))["client_secret"])},
        )
        assert reply.status_code == 403
        async with stream(http, "/api/admin/stream", ticket=await ticket(http, ADMIN_TOKEN)) as sse:
            first = await sse.next()
            assert first is not None and first.type == "admin.snapshot" and first.id is None
            session = await create(http)
            await pay(http, session, OK)
            done = await sse.until(
                lambda e: (
                    e.type == "state"
                    and e.data["session"] == session["id"]
                    and e.data["data"]["session"]["status"] == "succeeded"
                )
            )
            assert done.id is None


async def test_a_long_poll_answer_says_how_long_a_poll_may_be_held(server: Server) -> None:
    """``hold_ms`` is PAYLIVE_POLL_HOLD_MS (3000 here), in every answer, held or not: a
    client cannot ask for more (422), and bounds its wait for a held poll by it."""
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session = await create(http)
        events = f"/api/sessions/{session['id']}/events"
        auth = bearer(session["client_secret"])
        first = (await http.get(events, params={"wait": 0}, headers=auth)).json()
        assert first["hold_ms"] == 3000
        started = time.monotonic()
        held = (await http.get(events, params={"since": first["seq"]}, headers=auth)).json()
        assert held["events"] == [] and held["hold_ms"] == 3000
        # Held no longer than it said (a margin for the answer's way back).
        assert 2.5 < time.monotonic() - started < held["hold_ms"] / 1000 + 1.5
        short = (await http.get(events, params={"since": 0, "wait": 100}, headers=auth)).json()
        assert short["hold_ms"] == 3000
        too_long = await http.get(events, params={"wait": 3001}, headers=auth)
        assert too_long.status_code == 422


async def test_a_long_poll_answers_at_once_or_holds_then_answers_empty(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session = await create(http)
        events = f"/api/sessions/{session['id']}/events"
        auth = bearer(session["client_secret"])
        first = (await http.get(events, headers=auth)).json()
        assert [e["type"] for e in first["events"]] == ["snapshot"]
        await pay(http, session, DECLINED)
        # Held until the attempt's events come, then answered with all of them.
        reply = (await http.get(events, params={"since": 0}, headers=auth)).json()
        assert [e["seq"] for e in reply["events"]] == [1]
        assert reply["status"] == "processing" and reply["deadline"] > reply["server_time"] - 5000
        started = time.monotonic()
        woken = (await http.get(events, params={"since": 1}, headers=auth)).json()
        assert time.monotonic() - started < 2.5
        seqs = [e["seq"] for e in woken["events"]]
        assert seqs[0] == 2 and seqs == list(range(2, 2 + len(seqs)))
        after = woken["seq"]
        # Nothing new: held for `wait` ms, answered empty with what draws the countdown.
        started = time.monotonic()
        empty = (await http.get(events, params={"since": after, "wait": 500}, headers=auth)).json()
        assert 0.4 < time.monotonic() - started < 2.5
        assert empty["events"] == [] and empty["seq"] == after
        assert empty["status"] == "interrupted" and empty["retry_at"] is not None
        assert abs(empty["server_time"] - time.time() * 1000) < 5000
        # A ticket opens a poll too, once; bad input is refused.
        one = await ticket(http, session["client_secret"])
        assert (await http.get(events, params={"ticket": one, "wait": 0})).status_code == 200
        assert (await http.get(events, params={"ticket": one, "wait": 0})).status_code == 401
        bad = await http.get(events, params={"wait": 999_999}, headers=auth)
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_field"
        assert (await http.get(events, params={"since": "-1"}, headers=auth)).status_code == 422
        assert (await http.get("/api/sessions/ps_x/events", headers=admin())).status_code == 404


# Two workers on one Redis: no request needs the worker of the one before it -------


async def test_a_stream_resumed_with_last_event_id_on_the_other_worker(
    pair: tuple[Server, Server],
) -> None:
    a, b = pair
    async with (
        httpx.AsyncClient(base_url=a.url, timeout=10) as on_a,
        httpx.AsyncClient(base_url=b.url, timeout=10) as on_b,
    ):
        session = await create(on_a)
        path = f"/api/sessions/{session['id']}/stream"
        # A ticket made on B opens a stream on A (signed, its use recorded in Redis).
        async with stream(on_a, path, ticket=await ticket(on_b, session["client_secret"])) as sse:
            assert (await sse.next()) is not None
            await pay(on_b, session, DECLINED)  # interrupted at once, with a retry prompt
            await sse.until(lambda e: e.type == "retry_prompt", 8)
            last = sse.durable()[-1].id
        assert last is not None
        # Dropped. Meanwhile: a retry that is declined, then one that succeeds.
        await _retry_when_allowed(on_b, session, DECLINED)
        await _wait_status(on_b, session, "interrupted", after=int(last))
        await _retry_when_allowed(on_b, session, OK)
        final = await _wait_status(on_b, session, "succeeded")
        headers = {"Last-Event-ID": last}
        async with stream(
            on_b, path, ticket=await ticket(on_a, session["client_secret"]), headers=headers
        ) as resumed:
            while not resumed.events or resumed.events[-1].data["seq"] < final["seq"]:
                event = await resumed.next()
                assert event is not None
        types = [e.type for e in resumed.events]
        assert "snapshot" not in types
        seqs = [e.data["seq"] for e in resumed.events if e.type in ("state", "retry_prompt")]
        assert seqs == list(range(int(last) + 1, final["seq"] + 1))
        assert [e.id for e in resumed.durable()] == [str(s) for s in seqs]


async def _retry_when_allowed(http: httpx.AsyncClient, session: dict[str, Any], card: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        reply = await http.post(
            f"/api/sessions/{session['id']}/attempts",
            json={"payment_method": {"card": card}},
            headers=bearer(session["client_secret"]),
        )
        if reply.status_code == 202:
            return
        assert reply.json()["error"]["code"] == "retry_not_yet_allowed", reply.text
        assert time.monotonic() < deadline
        await anyio.sleep(0.1)


async def _wait_status(
    http: httpx.AsyncClient, session: dict[str, Any], status: str, after: int = 0
) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        reply = await http.get(
            f"/api/sessions/{session['id']}", headers=bearer(session["client_secret"])
        )
        body: dict[str, Any] = reply.json()
        if body["status"] == status and body["seq"] > after:
            return body
        assert time.monotonic() < deadline, body
        await anyio.sleep(0.05)


async def test_a_stopping_server_ends_its_streams_with_a_close_event() -> None:
    srv = Server().start()
    try:
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
            session = await create(http)
            path = f"/api/sessions/{session['id']}/stream"
            async with stream(http, path, headers=bearer(session["client_secret"])) as sse:
                assert (await sse.next()) is not None
                assert srv.proc is not None
                srv.proc.send_signal(signal.SIGTERM)
                closing = await sse.until(lambda e: e.event == "close", 15)
                # The socket's close code for a server going away (a drain may say 1012).
                assert closing.data["code"] in (1001, 1012), closing.data
                assert (await sse.next(15)) is None
    finally:
        srv.close()


async def test_a_stream_that_stops_reading_is_cut_off() -> None:
    """A slow client is an attacker: an admin stream whose reader stopped is dropped once
    its queue (16 x PAYLIVE_SEND_QUEUE_SIZE) is full, long before its lifetime ends."""
    env = {"PAYLIVE_SEND_QUEUE_SIZE": "1", "PAYLIVE_STREAM_LIFETIME_MS": "120000"}
    with Server(env) as srv:
        raw = socket_module.socket(socket_module.AF_INET, socket_module.SOCK_STREAM)
        raw.setsockopt(socket_module.SOL_SOCKET, socket_module.SO_RCVBUF, 2048)
        # Small segments: the server's send buffer grows with the segment size (to
        # about 2 MB on loopback's 64 KB segments), and must fill before its writes wait.
        raw.setsockopt(socket_module.IPPROTO_TCP, socket_module.TCP_MAXSEG, SMALL_MSS)
        raw.connect(("127.0.0.1", srv.port))
        raw.sendall(
            f"GET /api/admin/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode()
        )
        raw.settimeout(5)
        assert raw.recv(512).startswith(b"HTTP/1.1 200")  # then it reads nothing more
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
            # Each new session is an admin.created message of about 4 KB on the stream;
            # the kernel takes about 100 KB (of small segments) before the server's
            # writes wait.
            metadata = {f"k{i:02}": "x" * 180 for i in range(20)}
            for turn in range(2_000):
                await create(http, metadata=metadata)
                if turn % 10 == 9:
                    if _slow_consumers((await http.get("/metrics")).text) >= 1:
                        break
                    assert time.monotonic() - started < 90, "the stream was never cut off"
            assert _slow_consumers((await http.get("/metrics")).text) >= 1
        # What was sent before is still readable; then the server's end of it: the
        # response's last chunk, or the connection's close when the server gave up
        # writing that chunk. (After the last chunk the connection is kept alive, until
        # uvicorn's 5 s keep-alive timer, which this test does not check.)
        raw.settimeout(10)
        tail = b""
        while not tail.endswith(b"\n\r\n0\r\n\r\n") and (chunk := raw.recv(65536)):
            tail += chunk
        raw.close()
        assert time.monotonic() - started < 60
        assert b"event: close" not in tail or b'"code":1013' in tail


def _slow_consumers(metrics: str) -> float:
    for line in metrics.splitlines():
        if line.startswith("paylive_slow_consumers_total"):
            return float(line.split()[-1])
    return 0.0
