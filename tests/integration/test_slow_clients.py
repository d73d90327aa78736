"""Slow and bad clients against real ``paylive serve`` workers (issue 17): nothing a
client sends, or how slowly, holds a connection, a place at the door or a stale
answer past its bound.

Each test names the finding it would have caught: a trickle after an early answer
(401, 413) kept a connection for ever; slow bodies took every place at the door;
an ``Idempotency-Key`` remembered a "not yet" after ``retry_at``; CRLFs between
requests restarted the keep-alive timer.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from ..support.client import create, merchant, open_socket, session_url
from ..support.redisproc import REDIS_SERVER, start_redis
from ..support.servers import ADMIN_TOKEN, API_KEY, Server
from ..support.waiting import closed_by_server, healthz_on, until

pytestmark = pytest.mark.anyio

OK = "4242424242424242"
DECLINED = "4000000000000002"
NEVER = "4000000000000408"  # the sandbox never answers the charge
# Short, so the tests wait little; long enough that a busy machine never trips it
# for a client that sends its headers at once.
HEADER_TIMEOUT_S = 1.5
# An idle connection's keep-alive (uvicorn's timer, 5 s unless set): short, so that
# the keep-alive test waits little; longer than the 0.5 s between its blank lines.
KEEPALIVE_S = 2.0

# The module's server, shared by the tests whose settings agree: a send queue of four
# (the replay test), a provider deadline (the hanging provider's test) and no retry
# delay mean nothing to the trickle and keep-alive tests, which send no command.
SERVER_ENV = {
    "PAYLIVE_HEADER_TIMEOUT_MS": str(int(HEADER_TIMEOUT_S * 1000)),
    "PAYLIVE_KEEPALIVE_MS": str(int(KEEPALIVE_S * 1000)),
    "PAYLIVE_SEND_QUEUE_SIZE": "4",
    "PAYLIVE_RETRY_DELAY_MS": "0",
    "PAYLIVE_PROVIDER_DEADLINE_MS": "500",
    "PAYLIVE_ATTEMPT_TIMEOUT_MS": "1500",
}
# Long enough that a request sent as soon as a decline is seen arrives before its
# retry_at on a loaded machine.
RETRY_DELAY_MS = 1500


@pytest.fixture(scope="module")
def retrying() -> Iterator[Server]:
    """A server of the tests that retry across ``retry_at``, and of the slow-bodies
    test (which sends no retry: its long header timeout and door of 64 are its own)."""
    env = {
        "PAYLIVE_RETRY_DELAY_MS": str(RETRY_DELAY_MS),
        "PAYLIVE_HEADER_TIMEOUT_MS": "8000",
        "PAYLIVE_MAX_IN_FLIGHT": "64",
    }
    with Server(env) as srv:
        yield srv


def early_answered(kind: str) -> bytes:
    """A request answered before its body arrives, and the first bytes of that body."""
    if kind == "401":
        # An admin route authenticates before it reads.
        head = (
            b"POST /api/admin/sessions/ps_x/review HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer not-the-token\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n"
        )
    elif kind == "401 command":
        # The door answers a stranger before it reads the body.
        head = (
            b"POST /api/sessions/ps_x/attempts HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer ps_x_secret_forged\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n"
        )
    else:
        head = (
            b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + API_KEY.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 999999\r\n\r\n"
        )
    return head + b'{"a'


class Trickler:
    """Connections that each send a request answered early, then one byte every
    ``every`` seconds, through the server's end of file too: records what each got,
    when the server said it was done (``eof_at``) and when it had let the connection
    go, so that a byte sent is refused (``closed_at``)."""

    def __init__(self, port: int, kinds: list[str]) -> None:
        self.selector = selectors.DefaultSelector()
        self.socks: list[socket.socket] = []
        self.started: dict[int, float] = {}
        self.answers: dict[int, bytes] = {}
        self.eof_at: dict[int, float] = {}
        self.closed_at: dict[int, float] = {}
        for kind in kinds:
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(early_answered(kind))
            self.started[sock.fileno()] = time.monotonic()
            self.answers[sock.fileno()] = b""
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.socks.append(sock)

    def _read(self) -> None:
        for key, _ in self.selector.select(timeout=0.02):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            fd = sock.fileno()
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                self.closed_at.setdefault(fd, time.monotonic())
                self.selector.unregister(sock)
                continue
            if data:
                self.answers[fd] += data
            else:
                self.eof_at[fd] = time.monotonic()
                self.selector.unregister(sock)

    def run(self, until: float, every: float = 0.1, stop_when_closed: bool = True) -> None:
        """Read answers and trickle bytes until ``until`` (monotonic), bounded."""
        next_byte = time.monotonic() + every
        while time.monotonic() < until:
            if stop_when_closed and len(self.closed_at) == len(self.socks):
                return
            self._read()
            if time.monotonic() >= next_byte:
                next_byte += every
                for sock in self.socks:
                    if sock.fileno() in self.closed_at:
                        continue
                    try:
                        sock.send(b"x")
                    except OSError:
                        # Refused: the server let the connection go (a reset came back).
                        self.closed_at[sock.fileno()] = time.monotonic()

    def answered(self) -> int:
        return sum(1 for got in self.answers.values() if b"\r\n\r\n" in got)

    def close(self) -> None:
        self.selector.close()
        for sock in self.socks:
            sock.close()


# The door's connections --------------------------------------------------------


def test_a_trickle_after_an_early_answer_does_not_keep_the_connection(server: Server) -> None:
    """200 connections answered 401 or 413 before their body, then sending a byte
    every 0.1 s, all get their answer and an end of file, and are let go (a byte sent
    is refused) within the header timeout + 4 s."""
    trickler = Trickler(server.port, ["401", "401 command", "413", "413"] * 50)
    try:
        trickler.run(until=time.monotonic() + HEADER_TIMEOUT_S + 5)
        open_still = len(trickler.socks) - len(trickler.closed_at)
        assert open_still == 0, f"{open_still} of 200 connections still open"
        for fd, started in trickler.started.items():
            # Each byte is 0.1 s apart: a close is seen at most 0.2 s after it happened.
            # The bound allows 4 s past the header timeout: this process and the server
            # share two cores with the suite's other processes (2.57 s was once seen, and
            # 3.55 s on a slower machine). A connection never let go trickles on to the
            # end of the run and fails the count above.
            took = trickler.closed_at[fd] - started - 0.2
            assert took <= HEADER_TIMEOUT_S + 4, f"closed after {took:.2f} s"
            assert fd in trickler.eof_at, "the answer was not followed by an end of file"
            answer = trickler.answers[fd]
            assert answer.startswith((b"HTTP/1.1 401", b"HTTP/1.1 413")), answer[:60]
            assert b"connection: close" in answer.lower(), answer[:300]
    finally:
        trickler.close()


def test_a_worker_at_its_connection_limit_still_answers_a_fresh_customer() -> None:
    """100 trickling connections answered early cannot hold a worker of 50."""
    env = {"PAYLIVE_HEADER_TIMEOUT_MS": "5000", "PAYLIVE_MAX_CONNECTIONS": "50"}
    with Server(env) as srv:
        trickler = Trickler(srv.port, ["401", "413"] * 50)
        try:
            # Every answer in, the connections still trickling (within their 5 s header
            # timeout): the fresh customer comes while they are all held open.
            deadline = time.monotonic() + 10
            while trickler.answered() < 100 and time.monotonic() < deadline:
                trickler.run(until=time.monotonic() + 0.1, stop_when_closed=False)
            assert trickler.answered() == 100
            asked = time.monotonic()
            statuses = []
            with httpx.Client(base_url=srv.url, timeout=1) as http:
                # At least one try, however late the loop starts on a loaded machine.
                while not statuses or time.monotonic() - asked < 1:
                    reply = http.post(
                        "/api/sessions",
                        json={"order_id": "fresh", "amount": 100, "currency": "EUR"},
                        headers=merchant(),
                    )
                    statuses.append(reply.status_code)
                    if reply.status_code == 201:
                        break
                    trickler.run(until=time.monotonic() + 0.05, stop_when_closed=False)
            assert statuses[-1] == 201, f"a fresh customer got {statuses} within 1 s"
        finally:
            trickler.close()


def test_a_body_sent_steadily_but_slowly_is_cut_off_by_one_deadline(server: Server) -> None:
    """A byte every 0.1 s keeps no gap long, but the whole body is late: 408."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        sock.sendall(
            b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + API_KEY.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
        )
        started = time.monotonic()
        answer = b""
        sock.settimeout(0.1)
        while time.monotonic() - started < HEADER_TIMEOUT_S + 3:
            try:
                sock.send(b" ")
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                break
            if not chunk:
                break
            answer += chunk
        took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
        assert b'"request_timeout"' in answer
        assert took <= HEADER_TIMEOUT_S + 1.5, f"408 and close after {took:.2f} s"
    finally:
        sock.close()


def test_crlf_between_requests_does_not_keep_an_idle_connection(server: Server) -> None:
    """Blank lines start no request: they must not restart the keep-alive timer
    (uvicorn's, PAYLIVE_KEEPALIVE_MS), so the connection is closed on time however many
    come."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        healthz_on(sock)
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < KEEPALIVE_S + 4:
            try:
                sock.send(b"\r\n")
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            if closed_by_server(sock, time.monotonic() + 0.5) is not None:
                closed = True
                break
        took = time.monotonic() - started
        assert closed, f"still open after {KEEPALIVE_S + 4} s of blank lines"
        assert took <= KEEPALIVE_S + 1.5, f"closed after {took:.2f} s"
    finally:
        sock.close()


# Small segments and a small window: the server's send buffer stays small (it grows
# with the segment size, to about 2 MB on loopback's 64 KB segments), so a few dozen
# answers of 4 KB fill it and the worker's writes wait.
SMALL_MSS = 536
# A TCP connection's state in TCP_INFO's first byte, as long as it is open both ways.
ESTABLISHED = 1
# PAYLIVE_WRITE_TIMEOUT_MS of the tests below.
WRITE_TIMEOUT_S = 1.0
NEVER_READS_ENV = {
    "PAYLIVE_WRITE_TIMEOUT_MS": str(int(WRITE_TIMEOUT_S * 1000)),
    "PAYLIVE_MAX_IN_FLIGHT": "1",
    "PAYLIVE_ADAPTIVE_IN_FLIGHT": "0",
}
METADATA = {f"k{i:02}": "x" * 180 for i in range(20)}  # about 4 KB a session


def _never_reading(port: int) -> socket.socket:
    """A connection whose receive window stays small; the caller reads nothing on it."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SMALL_MSS)
    raw.connect(("127.0.0.1", port))
    return raw


def _let_go(raw: socket.socket) -> bool:
    """Whether the server reset (or ended) ``raw``: seen in its state, nothing read."""
    return raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != ESTABLISHED


def _in_flight(http: httpx.Client) -> list[str]:
    metrics = http.get("/metrics").text.splitlines()
    return [line for line in metrics if line.startswith("paylive_in_flight ")]


def test_a_client_that_never_reads_its_answers_gives_back_connection_and_place() -> None:
    """150 commands pipelined by a client that reads none of their answers: once the
    worker's writes to it waited, the one being answered held its connection and its
    place at the door for ever (the only place: every other command was 503). Now the
    connection is let go (reset) once its writes have waited PAYLIVE_WRITE_TIMEOUT_MS,
    and its place with it."""
    body = json.dumps({"order_id": "o", "amount": 100, "currency": "EUR", "metadata": METADATA})
    command = (
        b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + API_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body)
        + body.encode()
    )
    with Server(NEVER_READS_ENV) as srv:
        raw = _never_reading(srv.port)
        raw.setblocking(False)
        # Far more answers than the kernel's buffers on both ends take (about 30).
        unsent = memoryview(command * 150)
        started = time.monotonic()
        let_go = False
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(raw, selectors.EVENT_WRITE)
                while not let_go and time.monotonic() - started < WRITE_TIMEOUT_S + 15:
                    let_go = _let_go(raw)
                    if not selector.select(timeout=0.05) or not unsent:
                        continue
                    try:
                        unsent = unsent[raw.send(unsent) :]
                    except BlockingIOError:
                        continue
                    except OSError:
                        let_go = True
            assert let_go, "a client that reads nothing still holds its connection"
            with httpx.Client(base_url=srv.url, timeout=5) as http:
                assert _in_flight(http) == ["paylive_in_flight 0.0"], _in_flight(http)
                fresh = http.post(
                    "/api/sessions",
                    json={"order_id": "fresh", "amount": 100, "currency": "EUR"},
                    headers=merchant(),
                )
                assert fresh.status_code == 201, fresh.text
        finally:
            raw.close()


def test_a_socket_that_never_reads_is_let_go() -> None:
    """An admin feed whose client stopped reading: its consumer is dropped (1013), but
    the close frame waited behind what the client never took, and so did the close
    after an unanswered ping: the connection stayed open for ever. Now it is reset once
    the worker's writes have waited PAYLIVE_WRITE_TIMEOUT_MS."""
    with Server({**NEVER_READS_ENV, "PAYLIVE_SEND_QUEUE_SIZE": "1"}) as srv:
        raw = _never_reading(srv.port)
        try:
            raw.sendall(
                b"GET /ws/admin?token="
                + ADMIN_TOKEN.encode()
                + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            raw.settimeout(5)
            assert raw.recv(12).startswith(b"HTTP/1.1 101")  # then it reads nothing more
            started = time.monotonic()
            with httpx.Client(base_url=srv.url, timeout=5) as http:
                # Each new session is an admin.created message of about 4 KB.
                for turn in range(400):
                    if _let_go(raw):
                        break
                    reply = http.post(
                        "/api/sessions",
                        json={
                            "order_id": f"o-{turn}",
                            "amount": 100,
                            "currency": "EUR",
                            "metadata": METADATA,
                        },
                        headers=merchant(),
                    )
                    assert reply.status_code == 201, reply.text
                deadline = time.monotonic() + WRITE_TIMEOUT_S + 10
                while not _let_go(raw) and time.monotonic() < deadline:
                    http.get("/healthz")  # a short wait, on the server's clock
            took = time.monotonic() - started
            assert _let_go(raw), f"a socket that reads nothing still open after {took:.1f} s"
        finally:
            raw.close()


# The door's places ----------------------------------------------------------------


async def test_slow_bodies_of_one_secret_leave_the_door_open_to_others(
    retrying: Server,
) -> None:
    """One client secret sending 64 bodies slowly: another session's command and a
    session creation still get in (before, each slow body held one of the 64 places)."""
    srv = retrying
    async with httpx.AsyncClient(base_url=srv.url, timeout=5) as http:
        mine, other = await create(http), await create(http)
        head = (
            f"POST /api/sessions/{mine['id']}/attempts HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {mine['client_secret']}\r\n"
            "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
            '{"payment_method": '
        ).encode()
        slow = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(64)]
        try:
            for sock in slow:
                sock.sendall(head)
            await anyio.sleep(0.5)  # every one of them is inside, waiting for its body
            pay = await http.post(
                f"/api/sessions/{other['id']}/attempts",
                json={"payment_method": {"card": OK}},
                headers={"Authorization": f"Bearer {other['client_secret']}"},
            )
            assert pay.status_code == 202, pay.text
            created = await http.post(
                "/api/sessions",
                json={"order_id": "o-2", "amount": 100, "currency": "EUR"},
                headers=merchant(),
            )
            assert created.status_code == 201, created.text
            for sock in slow:
                sock.setblocking(False)
                with pytest.raises(BlockingIOError):
                    sock.recv(1)  # still waiting for its body, not refused
        finally:
            for sock in slow:
                sock.close()


# Idempotency-Key across retry_at ---------------------------------------------------


async def _interrupted(http: httpx.AsyncClient) -> dict[str, object]:
    """A session whose first attempt was declined: a retry waits for ``retry_at``."""
    session = await create(http)
    url = f"/api/sessions/{session['id']}/attempts"
    reply = await http.post(url, json={"payment_method": {"card": DECLINED}}, headers=merchant())
    assert reply.status_code == 202, reply.text
    return await _interrupted_now(http, str(session["id"]))  # the decline came


async def _interrupted_now(http: httpx.AsyncClient, session_id: str) -> dict[str, Any]:
    """The session once it is ``interrupted``, polled for up to 10 s."""

    async def interrupted() -> dict[str, Any] | None:
        got: dict[str, Any] = (
            await http.get(f"/api/sessions/{session_id}", headers=merchant())
        ).json()
        return got if got["status"] == "interrupted" else None

    found: dict[str, Any] = await until(interrupted, timeout=10)
    return found


async def _until_epoch_ms(at: int) -> None:
    """Wait for a moment the server named (``retry_at``, epoch milliseconds)."""
    while time.time() * 1000 < at:
        await anyio.sleep(0.05)


async def test_the_same_key_after_retry_at_starts_the_attempt(retrying: Server) -> None:
    async with httpx.AsyncClient(base_url=retrying.url, timeout=5) as http:
        session = await _interrupted(http)
        url = f"/api/sessions/{session['id']}/attempts"
        keyed = {**merchant(), "Idempotency-Key": "retry-once"}
        pay = {"payment_method": {"card": OK}}
        early = await http.post(url, json=pay, headers=keyed)
        assert early.status_code == 409, early.text
        assert early.json()["error"]["code"] == "retry_not_yet_allowed"
        await _until_epoch_ms(int(str(session["retry_at"])) + 50)
        later = await http.post(url, json=pay, headers=keyed)
        assert later.status_code == 202, later.text
        assert len(later.json()["attempts"]) == 2
        again = await http.post(url, json=pay, headers=keyed)
        assert again.status_code == 202 and again.json() == later.json(), "replayed"


async def test_concurrent_idempotent_retries_across_retry_at_start_one_attempt(
    retrying: Server,
) -> None:
    """Requests with one key every 50 ms from 0.6 s before ``retry_at`` to 0.6 s after it:
    those before are told "not yet" or "in use", exactly one attempt starts, and every
    answer after the first 202 is that 202."""
    async with httpx.AsyncClient(base_url=retrying.url, timeout=10) as http:
        session = await _interrupted(http)
        url = f"/api/sessions/{session['id']}/attempts"
        keyed = {**merchant(), "Idempotency-Key": "retry-together"}
        # A charge that never answers: the attempt stays in flight all along, as a slow
        # provider's would (a quick decline first, so that retry_at comes soon).
        pay = {"payment_method": {"card": NEVER}}
        answers: list[tuple[float, httpx.Response]] = []

        async def one() -> None:
            reply = await http.post(url, json=pay, headers=keyed)
            answers.append((time.monotonic(), reply))

        await _until_epoch_ms(int(str(session["retry_at"])) - 600)
        async with anyio.create_task_group() as tg:
            for _ in range(24):  # 1.2 s of them, across retry_at
                tg.start_soon(one)
                await anyio.sleep(0.05)
        answers.sort(key=lambda pair: pair[0])
        codes = [
            reply.status_code if reply.status_code == 202 else reply.json()["error"]["code"]
            for _, reply in answers
        ]
        assert 202 in codes, codes
        first = codes.index(202)
        assert set(codes[:first]) <= {"retry_not_yet_allowed", "idempotency_key_in_use"}, codes
        started = [reply.json() for _, reply in answers[first:]]
        assert all(
            reply.status_code == 202 or reply.json()["error"]["code"] == "idempotency_key_in_use"
            for _, reply in answers[first:]
        ), codes
        bodies = {str(body) for body in started if "attempts" in body}
        assert len(bodies) == 1, "every 202 is the same answer"
        got = (await http.get(f"/api/sessions/{session['id']}", headers=merchant())).json()
        assert len(got["attempts"]) == 2, "exactly one attempt started"


# A provider that does not answer ----------------------------------------------------

HANGS = "4000000000000606"  # the sandbox's charge call hangs for ten minutes


async def test_a_provider_that_hangs_holds_a_request_only_until_the_deadline(
    server: Server,
) -> None:
    """The request (its place at the door, its Idempotency-Key lock) ends at
    PAYLIVE_PROVIDER_DEADLINE_MS; the attempt's timeout then decides the outcome."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        session = await create(http)
        url = f"/api/sessions/{session['id']}/attempts"
        keyed = {**merchant(), "Idempotency-Key": "hangs-1"}
        started = time.monotonic()
        reply = await http.post(url, json={"payment_method": {"card": HANGS}}, headers=keyed)
        took = time.monotonic() - started
        assert reply.status_code == 202, reply.text
        assert took < 3, f"the request was held {took:.1f} s by the provider"
        assert reply.json()["attempts"][0]["status"] == "processing", "outcome unknown"
        ended = await _interrupted_now(http, str(session["id"]))  # the timeout decided
        assert ended["last_error"]["reason"] == "timeout"
        metrics = (await http.get("/metrics")).text
        # The module's server: this test is the only one whose provider hangs.
        assert "paylive_provider_deadline_total 1.0" in metrics


# A replay longer than the send queue -------------------------------------------------


async def test_a_replay_longer_than_the_send_queue_is_a_snapshot_not_a_close_loop(
    server: Server,
) -> None:
    """Six durable events behind ``since=0`` on a queue of four: the socket gets a
    snapshot and stays (before, it was closed 1013 before anything was sent, and the
    client reconnected with the same ``since`` for ever)."""
    srv = server  # a send queue of four, and no retry delay
    async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
        session = await create(http)
        url = f"/api/sessions/{session['id']}/attempts"
        for _ in range(2):
            reply = await http.post(
                url, json={"payment_method": {"card": DECLINED}}, headers=merchant()
            )
            assert reply.status_code == 202, reply.text
            got = await _interrupted_now(http, str(session["id"]))  # the decline came
        seq = got["seq"]
        assert seq > 2, seq
        sock = await open_socket(session_url(srv.ws_url, session) + "&since=0")
        first = await sock.recv()
        assert first["type"] == "snapshot", first
        assert first["data"]["session"]["seq"] == seq
        await sock.send({"type": "ping"})
        assert (await sock.until(lambda m: m["type"] == "pong"))["type"] == "pong"
        await sock.conn.close()


# Each session's share of the door --------------------------------------------------


async def test_one_session_holds_only_its_share_of_the_door(tmp_path: Path) -> None:
    """Redis frozen under them, one session's commands hold two of the four places
    (the rest 429 ``rate_limited``), and another session's command still gets in."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    redis = start_redis(tmp_path / "redis")
    env = {
        "PAYLIVE_REDIS_URL": redis.url,
        "PAYLIVE_MAX_IN_FLIGHT": "4",
        "PAYLIVE_MAX_IN_FLIGHT_PER_SESSION": "2",
        "PAYLIVE_REDIS_TIMEOUT_MS": "5000",
        "PAYLIVE_ATTEMPT_TIMEOUT_MS": "600000",
    }
    try:
        with Server(env) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=15) as http:
                mine, other = await create(http), await create(http)
                pay = {"payment_method": {"card": "4000000000000408"}}
                answers: dict[str, list[httpx.Response]] = {"mine": [], "other": []}

                async def command(who: str, session: dict[str, Any]) -> None:
                    reply = await http.post(
                        f"/api/sessions/{session['id']}/check",
                        headers={"Authorization": f"Bearer {session['client_secret']}"},
                    )
                    answers[who].append(reply)

                async def in_flight(count: int) -> bool:
                    # /metrics reads no Redis: it answers while Redis is frozen.
                    metrics = (await http.get("/metrics")).text
                    return f"\npaylive_in_flight {count}.0\n" in metrics

                redis.pause()
                try:
                    async with anyio.create_task_group() as tg:
                        for _ in range(4):
                            tg.start_soon(command, "mine", mine)
                        # Two inside, waiting on Redis; two refused.
                        await until(lambda: len(answers["mine"]) == 2 and in_flight(2))
                        tg.start_soon(command, "other", other)
                        await until(lambda: in_flight(3))  # the other session's got in
                        redis.resume()
                finally:
                    redis.resume()
                codes = sorted(r.status_code for r in answers["mine"])
                assert codes == [200, 200, 429, 429], [r.text for r in answers["mine"]]
                refused = [r for r in answers["mine"] if r.status_code == 429]
                assert all(r.json()["error"]["code"] == "rate_limited" for r in refused)
                assert all(int(r.headers["retry-after"]) >= 1 for r in refused)
                assert [r.status_code for r in answers["other"]] == [200], answers["other"][0].text
                paid = await http.post(
                    f"/api/sessions/{other['id']}/attempts", json=pay, headers=merchant()
                )
                assert paid.status_code == 202, paid.text
    finally:
        redis.stop()


# A GET whose answer (the 230 KB OpenAPI document) is more than the kernel's buffers and
# the transport's high-water mark take while the client reads nothing: the worker's
# writes wait on it from the one write that carries it.
BIG_ANSWER = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
ADMIN_HANDSHAKE = (
    b"GET /ws/admin?token="
    + ADMIN_TOKEN.encode()
    + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


def _upgraded_while_paused(port: int) -> socket.socket:
    """A connection that asked for a big answer, read none of it, and then upgraded to
    a socket: the worker's writes waited (on the HTTP protocol) when the handshake came.
    Nothing is read yet when it is returned."""
    raw = _never_reading(port)
    raw.sendall(BIG_ANSWER)
    raw.settimeout(5)
    # Peeked, not read: the window stays shut. The first bytes come from the write
    # that also filled the transport's buffer, so the writes wait from here on.
    assert raw.recv(12, socket.MSG_PEEK).startswith(b"HTTP/1.1 200")
    raw.sendall(ADMIN_HANDSHAKE)
    return raw


def test_a_socket_upgraded_while_writes_waited_is_not_reset_once_its_client_reads() -> None:
    """A client that read an answer late, after it had upgraded the connection to a
    socket: the write deadline armed while the HTTP protocol's writes waited was never
    stopped (the buffer drained to the socket's protocol, which the transport told
    instead), and reset the healthy socket PAYLIVE_WRITE_TIMEOUT_MS later."""
    with Server(NEVER_READS_ENV) as srv:
        raw = _upgraded_while_paused(srv.port)
        try:
            got = b""
            while b"HTTP/1.1 101" not in got:  # the big answer, then the handshake's
                chunk = raw.recv(65536)
                assert chunk, "the server ended the connection"
                got += chunk
            raw.setblocking(False)
            read_until = time.monotonic() + WRITE_TIMEOUT_S + 2
            with httpx.Client(base_url=srv.url, timeout=5) as http:
                while time.monotonic() < read_until and not _let_go(raw):
                    with contextlib.suppress(BlockingIOError):
                        raw.recv(65536)  # the client reads all it is sent
                    http.get("/healthz")  # a short wait, on the server's clock
            assert not _let_go(raw), "a socket whose client reads was reset"
            # Still a socket: a ping is answered with a pong.
            raw.setblocking(True)
            raw.sendall(bytes((0x89, 0x80)) + b"mask")
            pong = b""
            while b"\x8a\x00" not in pong:
                chunk = raw.recv(65536)
                assert chunk, "the server ended the connection"
                pong += chunk
        finally:
            raw.close()


def test_a_socket_upgraded_while_writes_waited_is_let_go_if_its_client_never_reads() -> None:
    """The same connection, its client reading nothing after the handshake: the socket's
    protocol starts with the writes waiting, and is reset by its own deadline."""
    with Server(NEVER_READS_ENV) as srv:
        raw = _upgraded_while_paused(srv.port)
        try:
            deadline = time.monotonic() + WRITE_TIMEOUT_S + 10
            with httpx.Client(base_url=srv.url, timeout=5) as http:
                while not _let_go(raw) and time.monotonic() < deadline:
                    http.get("/healthz")  # a short wait, on the server's clock
            assert _let_go(raw), "a socket that reads nothing is still open"
        finally:
            raw.close()
