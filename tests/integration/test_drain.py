"""A worker told to stop drains (docs/protocol.md section 4.3): new sockets refused,
readiness failing, the sockets held closed with 1012 and a reconnect hint, spread
over PAYLIVE_DRAIN_MS; with no window, every socket gets 1001 at once."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import struct
import time

import anyio
import httpx
import pytest

from ..support.client import Socket, create, merchant, open_socket, session_url
from ..support.redisproc import RedisProc
from ..support.servers import API_KEY, Server
from ..support.sse import Stream
from ..support.waiting import closed_by_server, until

pytestmark = pytest.mark.anyio

# Long enough that a loop late by a tenth of a second on a machine busy with the
# parallel suite does not crowd one tenth of the window (at 1.5 s, 8 of the 30 closes
# once fell in one 150 ms tenth).
WINDOW_MS = 3_000
SOCKETS = 30


def _upgrade_request(path: str, port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Protocol: paylive.v1.json\r\n\r\n"
    ).encode()


def _read_close(conn: socket.socket) -> tuple[int, str]:
    """The close code and reason the server sends on a raw socket after the upgrade."""
    data = b""
    conn.settimeout(5)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        assert chunk, f"closed before the upgrade's answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    while len(rest) < 2 or len(rest) < 2 + (rest[1] & 0x7F):
        chunk = conn.recv(4096)
        if not chunk:
            break
        rest += chunk
    assert rest[0] == 0x88, f"a close frame first, got {rest[:4]!r}"
    length = rest[1] & 0x7F
    payload = rest[2 : 2 + length]
    return struct.unpack("!H", payload[:2])[0], payload[2:].decode()


async def test_sigterm_spreads_1012_closes_over_the_window_and_refuses_new_sockets() -> None:
    with Server({"PAYLIVE_DRAIN_MS": str(WINDOW_MS)}) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
            sessions = [await create(http) for _ in range(SOCKETS)]
        socks = [await open_socket(session_url(srv.ws_url, s)) for s in sessions]
        for sock in socks:
            assert (await sock.recv())["type"] == "snapshot"
        # Connections made before the stop: one kept alive for /readyz, one that asks
        # for an upgrade only once the drain has begun.
        # An event stream (protocol 4.2) on the same worker is drained alike.
        sse_http = httpx.AsyncClient(base_url=srv.url, timeout=httpx.Timeout(10, read=None))
        secret = {"Authorization": f"Bearer {sessions[1]['client_secret']}"}
        sse_cm = sse_http.stream("GET", f"/api/sessions/{sessions[1]['id']}/stream", headers=secret)
        sse = Stream(await sse_cm.__aenter__())
        first = await sse.next()
        assert first is not None and first.type == "snapshot"
        kept = httpx.Client(base_url=srv.url, timeout=5)
        late = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        # Asked after ``late`` connected: the answer comes once the worker's loop has
        # been round since, so ``late`` is accepted, not still in the listener's
        # backlog, which the stop discards (a busy machine once reset it there).
        assert kept.get("/readyz").status_code == 200
        closes: list[tuple[float, int | None, str]] = []

        sse_close: list[dict[str, object]] = []

        async def watch_stream() -> None:
            event = await sse.until(lambda e: e.event == "close", timeout=WINDOW_MS / 1000 + 5)
            sse_close.append(event.data)

        async def watch(index: int) -> None:
            code = await socks[index].close_code(timeout=WINDOW_MS / 1000 + 5)
            closes.append((time.monotonic(), code, socks[index].conn.close_reason or ""))

        try:
            assert srv.proc is not None
            started = time.monotonic()
            srv.proc.terminate()
            async with anyio.create_task_group() as tg:
                for index in range(SOCKETS):
                    tg.start_soon(watch, index)
                tg.start_soon(watch_stream)
                await anyio.sleep(0.3)
                ready = await anyio.to_thread.run_sync(lambda: kept.get("/readyz"))
                assert ready.status_code == 503
                assert ready.json()["checks"]["shutting_down"] is True
                late.sendall(_upgrade_request(f"/ws/sessions/{sessions[0]['id']}", srv.port))
                code, reason = await anyio.to_thread.run_sync(_read_close, late)
                assert code == 1012
                assert reason == "restarting; reconnect_within_ms=1000"
                elapsed = time.monotonic() - started
                assert elapsed < WINDOW_MS / 1000, "refused at once, not after the drain"
        finally:
            kept.close()
            late.close()
            await sse_cm.__aexit__(None, None, None)
            await sse_http.aclose()
        assert sse_close == [{"code": 1012, "reason": "restarting; reconnect_within_ms=1000"}]
        assert {code for _, code, _ in closes} == {1012}
        assert {reason for _, _, reason in closes} == {"restarting; reconnect_within_ms=1000"}
        times = sorted(at - started for at, _, _ in closes)
        # Spread over the window, not a wall: the first go early, the last near its end,
        # and no tenth of the window holds more than a quarter of them.
        assert times[0] < 0.4 * WINDOW_MS / 1000, times
        assert times[-1] - times[0] > 0.6 * WINDOW_MS / 1000, times
        tenth = WINDOW_MS / 10_000
        buckets: dict[int, int] = {}
        for at in times:
            buckets[int(at / tenth)] = buckets.get(int(at / tenth), 0) + 1
        assert max(buckets.values()) <= SOCKETS / 4, buckets
        # uvicorn ends by raising the signal it caught again: -15 is a clean stop.
        assert srv.proc.wait(10) in (0, -15)
        assert "drained 31 sockets" in srv.log()  # and the stream


async def test_no_window_closes_every_socket_at_once_with_1001() -> None:
    with Server({"PAYLIVE_DRAIN_MS": "0"}) as own:
        async with httpx.AsyncClient(base_url=own.url) as client:
            session = await create(client)
        sock = await open_socket(session_url(own.ws_url, session))
        await sock.recv()
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, own.stop)
            assert await sock.close_code() == 1001


async def _second_signal_closes_the_rest(srv: Server, sig: int, after: float = 0.5) -> None:
    """SIGTERM, then ``sig`` ``after`` s later: every socket held closes with 1012 at
    once, not over the window, and the server exits."""
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
        sessions = [await create(http) for _ in range(SOCKETS)]
    socks = [await open_socket(session_url(srv.ws_url, s)) for s in sessions]
    for sock in socks:
        assert (await sock.recv())["type"] == "snapshot"
    assert srv.proc is not None
    srv.proc.terminate()
    await anyio.sleep(after)
    assert sum(sock.conn.close_code is None for sock in socks) > SOCKETS / 2, "still draining"
    srv.proc.send_signal(sig)
    forced_at = time.monotonic()
    codes: list[int | None] = []

    async def watch(sock: Socket) -> None:
        codes.append(await sock.close_code(timeout=3))

    async with anyio.create_task_group() as tg:
        for sock in socks:
            tg.start_soon(watch, sock)
    assert codes == [1012] * SOCKETS
    # uvicorn ends by raising the first signal it caught again.
    assert await anyio.to_thread.run_sync(lambda: srv.proc.wait(10)) in (0, -signal.SIGTERM)
    # Promptly: the app's stop, not the 60 s window nor uvicorn's grace.
    assert time.monotonic() - forced_at < 6
    # The log says the window was cut short, not that it ran its course (a worker of
    # two that held no socket drained at once, and says so).
    log = srv.log()
    assert "the rest at once on a second signal" in log, log[-2000:]
    assert not re.search(r"drained [1-9]", log), log[-2000:]
    # And the app's shutdown still ran in every worker: uvicorn skips it on a forced
    # stop, which left the runtime's loops, its engine and the exporter to the exit.
    stopped = log.count("worker stopped: loops ended, engine closed")
    assert stopped == srv.workers, log[-3000:]
    assert log.count("Application shutdown complete") == srv.workers, log[-3000:]


# A window far longer than the tests wait: only the second signal can end it.
LONG_WINDOW = {"PAYLIVE_DRAIN_MS": "60000"}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_a_second_signal_closes_the_rest_at_once(sig: int) -> None:
    with Server(LONG_WINDOW) as srv:
        await _second_signal_closes_the_rest(srv, sig)


async def test_a_second_sigterm_to_the_supervisor_reaches_its_workers(
    redis: RedisProc,
) -> None:
    with Server({**LONG_WINDOW, "PAYLIVE_REDIS_URL": redis.url}, workers=2) as srv:
        await _second_signal_closes_the_rest(srv, signal.SIGTERM)


async def test_two_sigterms_back_to_back_reach_the_workers(redis: RedisProc) -> None:
    # The supervisor reads its signals every half second, and not at all once it has
    # begun to stop: a second SIGTERM sent before it passed the first on was lost, and
    # the workers drained for their whole window.
    with Server({**LONG_WINDOW, "PAYLIVE_REDIS_URL": redis.url}, workers=2) as srv:
        await _second_signal_closes_the_rest(srv, signal.SIGTERM, after=0.02)


async def test_streams_and_polls_opened_during_the_drain_end_at_once() -> None:
    # The sockets held keep the drain going over its window; a stream and a long-poll
    # that start meanwhile (on a connection kept alive from before) are told 1012 and
    # answered at once, not held past the window until uvicorn cuts them.
    with Server({"PAYLIVE_DRAIN_MS": "2000", "PAYLIVE_POLL_HOLD_MS": "60000"}) as srv:
        timeout = httpx.Timeout(10, read=None)
        async with httpx.AsyncClient(base_url=srv.url, timeout=timeout) as http:
            *held, streamed, polled = [await create(http) for _ in range(SOCKETS + 2)]
            socks = [await open_socket(session_url(srv.ws_url, s)) for s in held]
            for sock in socks:
                await sock.recv()
            # The two connections the stream and the poll go on, opened before the stop.
            other = httpx.AsyncClient(base_url=srv.url, timeout=timeout)
            assert (await http.get("/healthz")).status_code == 200
            assert (await other.get("/healthz")).status_code == 200
            assert srv.proc is not None
            started = time.monotonic()
            srv.proc.terminate()
            await anyio.sleep(0.3)
            secret = {"Authorization": f"Bearer {streamed['client_secret']}"}
            url = f"/api/sessions/{streamed['id']}/stream"
            async with http.stream("GET", url, headers=secret) as response:
                stream = Stream(response)
                close = await stream.until(lambda e: e.event == "close", timeout=1.5)
                assert close.data == {
                    "code": 1012,
                    "reason": "restarting; reconnect_within_ms=1000",
                }
                assert await stream.next(timeout=1.5) is None, "and the stream ends"
            with anyio.fail_after(1.5):
                poll = await other.get(
                    f"/api/sessions/{polled['id']}/events",
                    params={"since": 0, "wait": 60000},
                    headers={"Authorization": f"Bearer {polled['client_secret']}"},
                )
            await other.aclose()
            assert poll.status_code == 200 and poll.json()["events"] == []
            for sock in socks:
                assert await sock.close_code(timeout=5) == 1012
        # The window plus a little, not uvicorn's 10 s cut on top of it.
        assert await anyio.to_thread.run_sync(lambda: srv.proc.wait(10)) in (0, -15)
        assert time.monotonic() - started < 4
        assert "graceful shutdown exceeded" not in srv.log()


GRACE_MS = 1_000


async def test_requests_in_flight_get_the_grace_then_are_cut() -> None:
    """PAYLIVE_SHUTDOWN_GRACE_MS (protocol 4.3): once the drain is over, a request
    still in flight that ends within the grace is answered, and one that does not is
    cut at its end (uvicorn's 10 s could not be changed)."""
    env = {
        "PAYLIVE_DRAIN_MS": "0",
        "PAYLIVE_SHUTDOWN_GRACE_MS": str(GRACE_MS),
        # Far past the grace: only the grace may cut the body left unfinished.
        "PAYLIVE_HEADER_TIMEOUT_MS": "30000",
    }
    with Server(env) as srv:
        body = json.dumps({"order_id": "order-grace", "amount": 1999, "currency": "EUR"})
        head = (
            f"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            f"Authorization: Bearer {API_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        # In flight: headers read, the app waiting for the body's last byte.
        short = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        long = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        try:
            for conn in (short, long):
                conn.sendall(head + body[:-1].encode())
            # Answered once the worker's loop has been round since both were accepted
            # and read (a connection still in the backlog would be reset by the stop).
            async with httpx.AsyncClient(base_url=srv.url, timeout=5) as http:
                assert (await http.get("/readyz")).status_code == 200
            assert srv.proc is not None
            started = time.monotonic()
            srv.proc.terminate()
            # The drain is over and the worker waits for the requests in flight.
            await until(lambda: "for 2 requests in flight" in srv.log(), timeout=5)
            short.sendall(body[-1:].encode())
            answer = await anyio.to_thread.run_sync(closed_by_server, short, time.monotonic() + 5)
            assert answer is not None and answer.startswith(b"HTTP/1.1 201 "), answer
            cut = await anyio.to_thread.run_sync(
                closed_by_server, long, started + GRACE_MS / 1000 + 4
            )
            took = time.monotonic() - started
        finally:
            short.close()
            long.close()
        assert cut is not None, "still open well past the grace"
        # Told the worker stopped, not a 500: the client sends it again elsewhere.
        assert cut.startswith(b"HTTP/1.1 503 ") and b'"shutting_down"' in cut, cut
        assert GRACE_MS / 1000 <= took < GRACE_MS / 1000 + 4, took
        assert await anyio.to_thread.run_sync(lambda: srv.proc.wait(10)) in (0, -15)
        log = srv.log()
        # One line for the requests cut, not a traceback each, and before the engine closed.
        assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
        at_cut = log.find("cut 1 requests in flight at the end of the grace")
        assert 0 <= at_cut < log.find("worker stopped: loops ended, engine closed"), log[-3000:]


# The sandbox's card whose charge never answers (protocol 3.4): its command waits on the
# provider, with the attempt saved as processing, for as long as the deadline allows.
HANGING_CARD = "4000000000000606"
# Far past what the test waits: only the stop may end the command.
HELD = {
    "PAYLIVE_DRAIN_MS": "0",
    "PAYLIVE_SHUTDOWN_GRACE_MS": "60000",
    "PAYLIVE_PROVIDER_DEADLINE_MS": "50000",
    "PAYLIVE_ATTEMPT_TIMEOUT_MS": "60000",
}


async def test_a_forced_stop_ends_the_requests_in_flight_before_the_engine_closes(
    redis: RedisProc,
) -> None:
    """A second SIGTERM (protocol 4.3) stops waiting for the requests in flight: each
    is answered 503 shutting_down (or its connection closed) before the app's shutdown
    closes the engine, with one line in the log and no traceback; none runs on against
    a closed engine, so the command's Idempotency-Key is let go, not left locked."""
    env = {**HELD, "PAYLIVE_REDIS_URL": redis.url}
    key = {"Idempotency-Key": "pay-forced-1"}
    body = {"payment_method": {"card": HANGING_CARD}}
    with Server(env) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=30) as http:
            session = await create(http)
            url = f"/api/sessions/{session['id']}"
            sock = await open_socket(session_url(srv.ws_url, session))
            assert (await sock.recv())["type"] == "snapshot"
            replies: list[httpx.Response | Exception] = []

            async def pay() -> None:
                try:
                    replies.append(
                        await http.post(f"{url}/attempts", json=body, headers=merchant() | key)
                    )
                except httpx.HTTPError as exc:
                    replies.append(exc)

            async def processing() -> bool:
                async with httpx.AsyncClient(base_url=srv.url, timeout=5) as other:
                    reply = await other.get(url, headers=merchant())
                return bool(reply.json()["status"] == "processing")

            async with anyio.create_task_group() as tg:
                tg.start_soon(pay)
                # Saved as processing: the command now waits on the provider's charge.
                await until(processing)
                assert srv.proc is not None
                srv.proc.terminate()
                # The stop is under way (its drain closed the socket), and the
                # command still waits: the second signal forces.
                assert await sock.close_code() == 1001
                assert not replies
                srv.proc.send_signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(lambda: srv.proc.wait(15)) in (0, -15)
        log = srv.log()
        [reply] = replies
        assert isinstance(reply, httpx.Response), f"{reply!r}\n{log[-3000:]}"
        assert reply.status_code == 503, reply.text
        assert reply.json()["error"]["code"] == "shutting_down"
        assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
        cut = log.find("cut 1 requests in flight at a forced stop")
        stopped = log.find("worker stopped: loops ended, engine closed")
        assert 0 <= cut < stopped, log[-3000:]
    # Money: what the cut command saved stands (its attempt in flight, left to its
    # timeout or webhook), and its key was let go while the engine was still open: the
    # same request again is answered with the attempt it started (protocol 3.1), not
    # refused as "in use" until the key's lock runs out, nor decided again.
    with Server({**env, "PAYLIVE_PROVIDER_DEADLINE_MS": "100"}) as again:
        async with httpx.AsyncClient(base_url=again.url, timeout=10) as http:
            reply = await http.post(f"{url}/attempts", json=body, headers=merchant() | key)
        assert reply.status_code == 202, reply.text
        [attempt] = reply.json()["attempts"]
        assert attempt["status"] == "processing", reply.text
