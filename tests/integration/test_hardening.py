"""Bad input answered, resources bounded: the findings of an attack on a running paylive
(issue 8), each against real ``paylive serve`` processes on both engines."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.exceptions import InvalidStatus

from paylive.core.signature import signature_header

from ..support.client import admin, create, merchant, open_socket, session_url
from ..support.redisproc import REDIS_SERVER, RedisProc, start_redis
from ..support.servers import ADMIN_TOKEN, API_KEY, WEBHOOK_SECRET, Server
from ..support.waiting import closed_by_server, healthz_on

pytestmark = pytest.mark.anyio

OK = "4242424242424242"
FULLWIDTH_OK = "".join(chr(0xFF10 + int(d)) for d in OK)
ROOT = Path(__file__).resolve().parents[2]
ENGINES = [
    "memory",
    pytest.param(
        "redis",
        marks=pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
    ),
]
# Short enough that the tests wait little, long enough that a busy machine never
# trips it for a client that sends its headers at once.
HEADER_TIMEOUT_MS = 1000
LIMITS = {
    "PAYLIVE_HEADER_TIMEOUT_MS": str(HEADER_TIMEOUT_MS),
    "PAYLIVE_MAX_SOCKETS_PER_SESSION": "2",
    "PAYLIVE_DEMO_PER_MINUTE": "3",
}


def engine_env(engine: str, request: pytest.FixtureRequest) -> dict[str, str]:
    if engine == "memory":
        return {}
    redis: RedisProc = request.getfixturevalue("redis")
    return {"PAYLIVE_REDIS_URL": redis.url}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # The module's server runs each engine in turn: every test of it runs on both.
    if "server" in metafunc.fixturenames:
        metafunc.parametrize("server", ENGINES, indirect=True, scope="module")


def SERVER_ENV(request: pytest.FixtureRequest) -> dict[str, str]:
    return {**LIMITS, **engine_env(request.param, request)}


def strict_json(raw: str | bytes) -> Any:
    """JSON as any other parser reads it: no NaN, no Infinity."""

    def refuse(name: str) -> None:
        raise ValueError(f"{name} is not JSON")

    return json.loads(raw, parse_constant=refuse)


async def created_count(http: httpx.AsyncClient) -> int:
    reply = await http.get("/api/admin/summary", headers=admin())
    assert reply.status_code == 200
    return int(strict_json(reply.content)["by_status"]["created"])


def error_code(reply: httpx.Response) -> str:
    return str(strict_json(reply.content)["error"]["code"])


# 1. Strict JSON in and out -------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"order_id": "o", "amount": 100, "currency": "EUR", "metadata": {"x": NaN}}',
        b'{"order_id": "o", "amount": 100, "currency": "EUR", "metadata": {"x": Infinity}}',
        b'{"order_id": "o", "amount": 100, "currency": "EUR", "metadata": {"x": -Infinity}}',
        b'{"order_id": "o", "amount": 100, "currency": "EUR", "metadata": {"x": 1e999}}',
        b'{"order_id": "o", "amount": NaN, "currency": "EUR"}',
        b'{"order_id": "o", "amount": 100, "currency": "EUR", "metadata": {"x": "\\ud800"}}',
        b'{"order_id": "o", "amount": 100, "currency": "EUR", "metadata": {"x": 9007199254740993}}',
    ],
)
async def test_numbers_json_cannot_carry_are_refused_and_nothing_is_stored(
    http: httpx.AsyncClient, raw: bytes
) -> None:
    before = await created_count(http)
    reply = await http.post(
        "/api/sessions", content=raw, headers={**merchant(), "Content-Type": "application/json"}
    )
    assert reply.status_code == 422 and error_code(reply) == "invalid_field", reply.text
    assert await created_count(http) == before, "nothing stored"
    listed = await http.get("/api/admin/sessions?status=all&limit=50", headers=admin())
    assert listed.status_code == 200
    strict_json(listed.content)


async def test_admin_feed_stays_strict_json(server: Server, http: httpx.AsyncClient) -> None:
    await http.post(
        "/api/sessions",
        content=b'{"order_id": "o", "amount": 1, "currency": "EUR", "metadata": {"x": NaN}}',
        headers={**merchant(), "Content-Type": "application/json"},
    )
    feed = await open_socket(f"{server.ws_url}/ws/admin?token={ADMIN_TOKEN}")
    raw = await feed.conn.recv()
    snapshot = strict_json(raw)
    assert snapshot["type"] == "admin.snapshot"
    await feed.conn.close()


async def test_a_socket_command_with_nan_is_refused_and_the_socket_stays(
    server: Server, http: httpx.AsyncClient
) -> None:
    session = await create(http)
    sock = await open_socket(session_url(server.ws_url, session))
    assert (await sock.recv())["type"] == "snapshot"
    pay = '{"type": "pay", "payment_method": {"card": "CARD"}, "ref": NaN}'
    await sock.conn.send(pay.replace("CARD", OK))
    refused = strict_json(await sock.conn.recv())
    assert refused["type"] == "error" and refused["data"]["code"] == "invalid_field"
    await sock.send({"type": "ping"})
    assert (await sock.recv())["type"] == "pong"
    got = (await http.get(f"/api/sessions/{session['id']}", headers=merchant())).json()
    assert got["seq"] == 0 and got["status"] == "created"
    await sock.conn.close()


# 6. Deep nesting ------------------------------------------------------------------


def signed(raw: bytes) -> dict[str, str]:
    header = signature_header(WEBHOOK_SECRET, int(time.time()), raw)
    return {"Paylive-Signature": header, "Content-Type": "application/json"}


async def test_deep_nesting_is_400_everywhere(http: httpx.AsyncClient) -> None:
    session = await create(http)
    secret = {"Authorization": f"Bearer {session['client_secret']}"}
    deep = b"[" * 5000 + b"]" * 5000
    middling = b'{"metadata": ' + b'{"a": ' * 100 + b"1" + b"}" * 100 + b"}"
    for path, headers in (
        ("/api/sessions", merchant()),
        (f"/api/sessions/{session['id']}/attempts", secret),
        (f"/api/sessions/{session['id']}/interrupt", secret),
        (f"/api/sessions/{session['id']}/cancel", secret),
    ):
        for raw in (deep, middling):
            reply = await http.post(path, content=raw, headers=headers)
            assert reply.status_code == 400 and error_code(reply) == "invalid_json", path
    webhook = await http.post("/webhooks/sandbox", content=deep, headers=signed(deep))
    assert webhook.status_code == 400 and error_code(webhook) == "invalid_json"
    got = (await http.get(f"/api/sessions/{session['id']}", headers=merchant())).json()
    assert got["status"] == "created" and got["seq"] == 0


@pytest.mark.parametrize("binary", [False, True], ids=["json", "msgpack"])
async def test_deep_nesting_closes_a_socket_with_1008(
    server: Server, http: httpx.AsyncClient, binary: bool
) -> None:
    session = await create(http)
    sock = await open_socket(session_url(server.ws_url, session), binary=binary)
    assert (await sock.recv())["type"] == "snapshot"
    if binary:
        await sock.conn.send(b"\x91" * 2000 + b"\xc0")  # 2000 nested one-element arrays
    else:
        await sock.conn.send("[" * 2000 + "]" * 2000)
    assert await sock.close_code() == 1008


# 7. ASCII digits only ----------------------------------------------------------------


async def test_digits_are_ascii_digits(server: Server, http: httpx.AsyncClient) -> None:
    session = await create(http)
    secret = {"Authorization": f"Bearer {session['client_secret']}"}
    path = f"/api/sessions/{session['id']}/attempts"
    reply = await http.post(path, json={"payment_method": {"card": FULLWIDTH_OK}}, headers=secret)
    assert reply.status_code == 422 and error_code(reply) == "invalid_card"
    for query in ("limit=\u00b2", "limit=\uff15", "limit=\u0665"):
        listed = await http.get(f"/api/admin/sessions?{query}", headers=admin())
        assert listed.status_code == 422 and error_code(listed) == "invalid_field", query
    sock = await open_socket(session_url(server.ws_url, session))
    assert (await sock.recv())["type"] == "snapshot"
    await sock.send({"type": "pay", "payment_method": {"card": FULLWIDTH_OK}, "ref": 1})
    refused = await sock.recv()
    assert refused["type"] == "error" and refused["data"]["code"] == "invalid_card"
    await sock.conn.close()
    since = await open_socket(session_url(server.ws_url, session) + "&since=\u00b2")
    assert await since.close_code() == 1008
    got = (await http.get(f"/api/sessions/{session['id']}", headers=merchant())).json()
    assert got["attempts"] == [], "nothing charged"


# 3. Staff watching a session cannot command it ----------------------------------------


async def test_an_admin_token_watches_a_customer_socket_but_cannot_command(
    server: Server, http: httpx.AsyncClient
) -> None:
    session = await create(http)
    sock = await open_socket(session_url(server.ws_url, session, token=ADMIN_TOKEN))
    assert (await sock.recv())["type"] == "snapshot"
    for command in (
        {"type": "pay", "payment_method": {"card": OK}, "ref": "p"},
        {"type": "retry", "ref": "r"},
        {"type": "cancel", "ref": "c"},
        {"type": "interrupt", "ref": "i"},
    ):
        await sock.send(command)
        refused = await sock.recv()
        assert refused["type"] == "error", command
        assert refused["data"]["code"] == "forbidden" and refused["data"]["ref"] == command["ref"]
    await sock.send({"type": "ping"})
    assert (await sock.recv())["type"] == "pong"
    got = (await http.get(f"/api/sessions/{session['id']}", headers=merchant())).json()
    assert got["status"] == "created" and got["seq"] == 0
    # The session's own customer still can, and the watcher sees it.
    customer = await open_socket(session_url(server.ws_url, session))
    assert (await customer.recv())["type"] == "snapshot"
    await customer.send({"type": "cancel"})
    assert (await sock.state("cancelled"))["data"]["cause"] == "cancelled"
    await sock.conn.close()
    await customer.conn.close()


# 2. Bounds: sockets per session, header timeout ------------------------------------------


async def test_sockets_per_session_are_capped(server: Server, http: httpx.AsyncClient) -> None:
    session = await create(http)
    url = session_url(server.ws_url, session)
    first, second = await open_socket(url), await open_socket(url)
    for sock in (first, second):
        assert (await sock.recv())["type"] == "snapshot"
    third = await open_socket(url)
    assert await third.close_code() == 1013
    assert "at most 2 sockets" in (third.conn.close_reason or "")
    await first.conn.close()
    # The server lets go of the closed one shortly; then a new socket is welcome.
    with anyio.fail_after(5):
        while True:
            again = await open_socket(url)
            message = await again.conn.recv()
            if isinstance(message, str) and json.loads(message)["type"] == "snapshot":
                break
            await anyio.sleep(0.05)
    await again.conn.close()
    await second.conn.close()


def test_slow_clients_are_cut_off(server: Server) -> None:
    """Headers (a socket's handshake too) must arrive within the header timeout of the
    connection or of a later request's first byte, and a body within it as well."""
    kept_alive = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    assert b"200 OK" in healthz_on(kept_alive)
    slow = {
        "nothing": b"",
        "half headers": b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        "half handshake": b"GET /ws/admin HTTP/1.1\r\nUpgrade: web",
        "half body": b"POST /api/sessions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + API_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    }
    socks = {name: socket.create_connection(("127.0.0.1", server.port), timeout=5) for name in slow}
    socks["kept alive, then half headers"] = kept_alive
    slow["kept alive, then half headers"] = b"GET /healthz HTTP/1.1\r\nHo"
    try:
        for name, sock in socks.items():
            sock.sendall(slow[name])
        deadline = time.monotonic() + HEADER_TIMEOUT_MS / 1000 + 4
        answers = {name: closed_by_server(sock, deadline) for name, sock in socks.items()}
    finally:
        for sock in socks.values():
            sock.close()
    for name, answer in answers.items():
        assert answer is not None, f"{name}: still open"
        if name == "half body":
            assert answer.startswith(b"HTTP/1.1 408") and b'"request_timeout"' in answer
        else:
            assert answer == b"", f"{name}: {answer[:80]!r}"


@pytest.fixture(scope="module", params=ENGINES)
def crowded(request: pytest.FixtureRequest) -> Iterator[Server]:
    """A worker that takes four connections at most (and waits long for headers)."""
    env = {"PAYLIVE_MAX_CONNECTIONS": "4", "PAYLIVE_HEADER_TIMEOUT_MS": "30000"}
    with Server({**env, **engine_env(request.param, request)}) as srv:
        yield srv


async def test_connections_past_the_limit_are_refused(crowded: Server) -> None:
    idle = [socket.create_connection(("127.0.0.1", crowded.port), timeout=5) for _ in range(4)]
    try:
        time.sleep(0.2)  # let the server take them
        async with httpx.AsyncClient(base_url=crowded.url, timeout=5) as http:
            reply = await http.get("/readyz")
            assert reply.status_code == 503 and error_code(reply) == "overloaded"
            assert reply.headers["retry-after"] == "1"
            # Liveness is never refused for load: answered, and that connection closed.
            alive = await http.get("/healthz")
            assert alive.status_code == 200 and alive.json() == {"ok": True}
            assert alive.headers["connection"] == "close"
            # ... and only liveness: the same path with another method is refused.
            assert (await http.post("/healthz")).status_code == 503
        with pytest.raises(InvalidStatus) as refused:
            await open_socket(f"{crowded.ws_url}/ws/admin?token={ADMIN_TOKEN}")
        assert refused.value.response.status_code == 503
    finally:
        for sock in idle:
            sock.close()
    with anyio.fail_after(5):
        while True:
            async with httpx.AsyncClient(base_url=crowded.url, timeout=5) as http:
                if (await http.get("/readyz")).status_code == 200:
                    break
            await anyio.sleep(0.05)


# 4. /demo and the Procfile ---------------------------------------------------------------


async def test_demo_is_rate_limited_per_address(http: httpx.AsyncClient) -> None:
    codes = [(await http.get("/demo")).status_code for _ in range(3)]
    assert codes == [303, 303, 303]
    refused = await http.get("/demo")
    assert refused.status_code == 429 and error_code(refused) == "rate_limited"
    assert int(refused.headers["retry-after"]) > 0


def test_the_procfile_runs_production_unless_told_otherwise() -> None:
    line = (ROOT / "Procfile").read_text().strip()
    kind, _, command = line.partition(":")
    assert kind == "web"
    bin_dir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PORT": "1"}
    done = subprocess.run(
        ["sh", "-c", command], env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "PAYLIVE_ENV=production refuses to start without" in done.stderr
    assert "0.0.0.0" in shlex.split(command)


# 5. Tokens never reach the log, however the query spells them -------------------------------


async def test_a_percent_encoded_token_key_is_redacted(
    server: Server, http: httpx.AsyncClient
) -> None:
    session = await create(http)
    feed = await open_socket(f"{server.ws_url}/ws/admin?%74oken={ADMIN_TOKEN}")
    assert (await feed.recv())["type"] == "admin.snapshot", "the encoded key authenticates"
    await feed.conn.close()
    url = f"{server.ws_url}/ws/sessions/{session['id']}?t%6Fk%65n={session['client_secret']}"
    sock = await open_socket(url)
    assert (await sock.recv())["type"] == "snapshot"
    await sock.conn.close()
    await http.get(f"/api/admin/summary?%54OKEN={ADMIN_TOKEN}&x=1")
    await anyio.sleep(0.3)  # the access log line is written after the answer
    log = server.log()
    assert "/ws/admin?%74oken=" in log, "the line is logged, redacted"
    assert ADMIN_TOKEN not in log
    assert session["client_secret"] not in log
    secret_mac = session["client_secret"].rpartition("_secret_")[2]
    assert secret_mac not in log


# 9. A session that vanished from Redis ------------------------------------------------------


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
async def test_a_socket_on_a_session_gone_from_redis_is_closed_with_4404(
    tmp_path: Path,
) -> None:
    volatile = start_redis(tmp_path / "volatile", appendonly=False)
    try:
        with Server({"PAYLIVE_REDIS_URL": volatile.url}) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
                session = await create(http)
            sock = await open_socket(session_url(srv.ws_url, session))
            assert (await sock.recv())["type"] == "snapshot"
            volatile.stop()
            volatile.start()  # empty: no append-only file, no snapshot
            assert await sock.close_code(timeout=15) == 4404
    finally:
        volatile.stop()


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
@pytest.mark.parametrize("appendonly", [False, True])
def test_production_warns_when_redis_keeps_no_append_only_file(
    tmp_path: Path, appendonly: bool
) -> None:
    proc = start_redis(tmp_path / "r", appendonly=appendonly)
    try:
        env = {"PAYLIVE_REDIS_URL": proc.url, "PAYLIVE_ENV": "production"}
        with Server({**env, "PAYLIVE_ALLOW_SANDBOX": "1"}) as srv:
            log = srv.log()
        warned = "keeps no append-only file" in log
        assert warned is not appendonly, log
    finally:
        proc.stop()
