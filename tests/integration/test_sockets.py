"""The customer channel and the admin feed against a real server (docs/protocol.md section 4)."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import httpx
import pytest

from ..support.client import Socket, admin, create, merchant, open_socket, session_url
from ..support.servers import ADMIN_TOKEN, Server
from ..support.waiting import until

pytestmark = pytest.mark.anyio

OK = "4242424242424242"
NEVER = "4000000000000408"
LOST_ANSWER = "4000000000000523"
LATE = "4000000000000770"
DECLINE = "4000000000000002"
STOLEN = "4000000000009979"


async def connect(server: Server, session: dict, **kw: object) -> Socket:
    sock = await open_socket(session_url(server.ws_url, session, **kw))  # type: ignore[arg-type]
    return sock


async def opened(server: Server, http: httpx.AsyncClient) -> tuple[dict, Socket]:
    """A new session and its socket, past the first snapshot."""
    session = await create(http)
    sock = await connect(server, session)
    snapshot = await sock.recv()
    assert snapshot["type"] == "snapshot" and snapshot["seq"] == 0
    return session, sock


def assert_gapless(sock: Socket) -> None:
    seqs = [m["seq"] for m in sock.durable()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs


@pytest.fixture(scope="module")
def patient_server() -> Iterator[Server]:
    """A server whose attempts wait 10 s: the module's times out after 1 s, and a
    process starved that long on a busy machine (6 test processes on 2 cores) took the
    sandbox's 150 ms answer as late, turning the happy path into a late success."""
    with Server({"PAYLIVE_ATTEMPT_TIMEOUT_MS": "10000"}) as running:
        yield running


async def test_happy_path(patient_server: Server) -> None:
    server = patient_server
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        session = await create(http)
        sock = await connect(server, session)
        snap = await sock.recv()
        assert snap["type"] == "snapshot" and snap["seq"] == 0
        assert snap["data"]["session"]["status"] == "created"
        await sock.send({"type": "pay", "payment_method": {"card": OK}, "ref": "p1"})
        started = await sock.state("processing")
        assert started["seq"] == 1 and started["data"]["cause"] == "attempt_started"
        assert started["data"]["previous"] == "created"
        assert started["data"]["session"]["deadline"] is not None
        done = await sock.state("succeeded", timeout=5)
        assert done["data"]["cause"] == "succeeded" and done["seq"] == 2
        assert {"type": "ack", "data": {"ref": "p1"}}.items() <= {
            k: v for m in sock.received if m["type"] == "ack" for k, v in m.items()
        }.items()
        assert_gapless(sock)
        got = (await http.get(f"/api/sessions/{session['id']}", headers=merchant())).json()
        assert got["status"] == "succeeded" and got["seq"] == 2
        assert got["attempts"][0]["status"] == "succeeded"
        await sock.conn.close()


async def test_timeout_countdown_retry_prompt_then_retry(
    server: Server, http: httpx.AsyncClient
) -> None:
    session, sock = await opened(server, http)
    await sock.send({"type": "pay", "payment_method": {"card": NEVER}})
    await sock.state("processing")
    countdown = await sock.until(lambda m: m["type"] == "countdown")
    assert countdown["data"]["attempt"] == 1
    assert 0 <= countdown["data"]["remaining_ms"] <= 1000
    interrupted = await sock.state("interrupted", timeout=4)
    assert interrupted["data"]["cause"] == "timeout"
    prompt = await sock.until(lambda m: m["type"] == "retry_prompt")
    assert prompt["seq"] == interrupted["seq"] + 1
    assert prompt["data"] == {
        "attempt": 1,
        "next_attempt": 2,
        "max_attempts": 3,
        "reason": "timeout",
        "retry_at": interrupted["data"]["session"]["retry_at"],
        "outcome_unknown": True,
    }
    # Too early: refused, nothing changes.
    await sock.send({"type": "retry", "ref": "early"})
    err = await sock.until(lambda m: m["type"] == "error")
    assert err["data"]["code"] == "retry_not_yet_allowed" and err["data"]["ref"] == "early"
    await anyio.sleep(0.35)
    await sock.send({"type": "retry", "payment_method": {"card": OK}, "ref": "r"})
    voided = await sock.until(lambda m: m["type"] == "state" and m["data"]["cause"] == "voided")
    assert voided["data"]["session"]["attempts"][0]["status"] == "voided"
    second = await sock.state("processing")
    assert second["data"]["session"]["attempt"] == 2
    assert second["data"]["session"]["attempts"][1]["idempotency_key"] == f"{session['id']}:2"
    await sock.state("succeeded")
    assert_gapless(sock)
    await sock.conn.close()


async def test_three_timeouts_fail_the_session(server: Server, http: httpx.AsyncClient) -> None:
    session, sock = await opened(server, http)
    for attempt in (1, 2, 3):
        kind = "pay" if attempt == 1 else "retry"
        if attempt > 1:
            await anyio.sleep(0.35)
        await sock.send({"type": kind, "payment_method": {"card": NEVER}, "ref": attempt})
        await sock.until(lambda m, n=attempt: m["type"] == "ack" and m["data"]["ref"] == n)
        if attempt < 3:
            await sock.until(lambda m: m["type"] == "retry_prompt", timeout=4)
    failed = await sock.state("failed", timeout=4)
    assert failed["data"]["cause"] == "failed"
    statuses = [a["status"] for a in failed["data"]["session"]["attempts"]]
    assert statuses == ["voided", "voided", "voided"]
    await sock.send({"type": "retry", "ref": "again"})
    err = await sock.until(lambda m: m["type"] == "error")
    assert err["data"]["code"] == "max_attempts_reached"
    assert_gapless(sock)
    await sock.conn.close()


async def test_late_success_after_timeout(server: Server, http: httpx.AsyncClient) -> None:
    session, sock = await opened(server, http)
    await sock.send({"type": "pay", "payment_method": {"card": LATE}})
    await sock.state("interrupted", timeout=4)
    late = await sock.state("succeeded", timeout=4)
    assert late["data"]["cause"] == "late_success"
    assert late["data"]["session"]["attempts"][0]["status"] == "succeeded"
    await sock.conn.close()


async def test_lost_answer_reconciled_with_already_paid(
    server: Server, http: httpx.AsyncClient
) -> None:
    session, sock = await opened(server, http)
    await sock.send({"type": "pay", "payment_method": {"card": LOST_ANSWER}})
    interrupted = await sock.state("interrupted")
    assert interrupted["data"]["cause"] == "network_error"
    prompt = await sock.until(lambda m: m["type"] == "retry_prompt")
    assert prompt["data"]["outcome_unknown"] is True
    await anyio.sleep(0.35)
    reply = await http.post(
        f"/api/sessions/{session['id']}/attempts",
        json={"payment_method": {"card": OK}},
        headers={"Authorization": f"Bearer {session['client_secret']}"},
    )
    assert reply.status_code == 409 and reply.json()["error"]["code"] == "already_paid"
    paid = await sock.state("succeeded")
    assert paid["data"]["cause"] == "late_success"
    got = (await http.get(f"/api/sessions/{session['id']}", headers=merchant())).json()
    assert [a["number"] for a in got["attempts"]] == [1], "no second charge was attempted"
    await sock.conn.close()


async def test_decline_then_stolen_card(server: Server, http: httpx.AsyncClient) -> None:
    session, sock = await opened(server, http)
    await sock.send({"type": "pay", "payment_method": {"card": DECLINE}})
    interrupted = await sock.state("interrupted")
    assert interrupted["data"]["cause"] == "declined"
    prompt = await sock.until(lambda m: m["type"] == "retry_prompt")
    assert prompt["data"]["outcome_unknown"] is False and prompt["data"]["reason"] == "declined"
    await anyio.sleep(0.35)
    await sock.send({"type": "retry", "payment_method": {"card": STOLEN}})
    failed = await sock.state("failed")
    assert failed["data"]["session"]["last_error"]["decline_code"] == "stolen_card"
    await sock.conn.close()


async def test_cancel_while_processing_voids_the_attempt(
    server: Server, http: httpx.AsyncClient
) -> None:
    session, sock = await opened(server, http)
    await sock.send({"type": "pay", "payment_method": {"card": NEVER}})
    await sock.state("processing")
    await sock.send({"type": "cancel", "ref": "c"})
    cancelled = await sock.state("cancelled")
    assert cancelled["data"]["cause"] == "cancelled"
    assert cancelled["data"]["session"]["attempts"][0]["status"] == "voided"
    await sock.send({"type": "cancel", "ref": "c2"})
    err = await sock.until(lambda m: m["type"] == "error")
    assert err["data"] == {"code": "invalid_state", "message": err["data"]["message"], "ref": "c2"}
    await sock.conn.close()


async def test_resume_with_since_replays_what_was_missed(
    server: Server, http: httpx.AsyncClient
) -> None:
    session, sock = await opened(server, http)
    await sock.send({"type": "pay", "payment_method": {"card": DECLINE}})
    first = await sock.state("processing")
    await sock.conn.close()

    # Offline while the attempt is declined and a retry prompt goes out.
    async def missed() -> bool:
        got = await http.get(f"/api/sessions/{session['id']}", headers=merchant())
        return bool(got.json()["seq"] == first["seq"] + 2)

    await until(missed, timeout=5)
    resumed = await connect(server, session, since=first["seq"])
    replay = [await resumed.recv(), await resumed.recv()]
    assert [m["type"] for m in replay] == ["state", "retry_prompt"]
    assert [m["seq"] for m in replay] == [first["seq"] + 1, first["seq"] + 2]
    assert "snapshot" not in resumed.types()
    await resumed.conn.close()
    # A since from the future cannot be replayed: a snapshot instead.
    odd = await connect(server, session, since=999)
    snap = await odd.recv()
    assert snap["type"] == "snapshot" and snap["seq"] == first["seq"] + 2
    await odd.conn.close()


async def test_msgpack_subprotocol(server: Server, http: httpx.AsyncClient) -> None:
    session = await create(http)
    sock = await open_socket(session_url(server.ws_url, session), binary=True)
    assert sock.conn.subprotocol == "paylive.v1.msgpack"
    snap = await sock.recv()
    assert snap["type"] == "snapshot"
    await sock.send({"type": "ping"})
    assert (await sock.until(lambda m: m["type"] == "pong"))["data"] == {}
    await sock.send({"type": "pay", "payment_method": {"card": OK}, "ref": 7})
    await sock.state("succeeded")
    await sock.conn.close()


async def test_admin_feed_sees_every_session(server: Server, http: httpx.AsyncClient) -> None:
    feed = await open_socket(f"{server.ws_url}/ws/admin?token={ADMIN_TOKEN}")
    first = await feed.recv()
    assert first["type"] == "admin.snapshot"
    assert set(first["data"]["summary"]) >= {"active", "by_status", "interruptions", "success_rate"}
    session = await create(http)
    pay = await http.post(
        f"/api/sessions/{session['id']}/attempts",
        json={"payment_method": {"card": OK}},
        headers=merchant(),
    )
    assert pay.status_code == 202
    done = await feed.until(
        lambda m: (
            m["type"] == "state"
            and m["session"] == session["id"]
            and m["data"]["session"]["status"] == "succeeded"
        )
    )
    assert done["seq"] == 2
    summary = await feed.until(lambda m: m["type"] == "summary", timeout=3)
    assert summary["session"] is None and summary["seq"] is None
    assert summary["data"]["by_status"]["succeeded"] >= 1
    await feed.conn.close()
    listed = (await http.get("/api/admin/sessions?status=all&limit=5", headers=admin())).json()
    assert listed["sessions"][0]["id"] == session["id"]


@pytest.mark.parametrize(
    "token, code",
    [("", 4401), ("nonsense", 4401), ("ps_x_secret_forged", 4401)],
)
async def test_bad_tokens_are_closed_4401(
    server: Server, http: httpx.AsyncClient, token: str, code: int
) -> None:
    session = await create(http)
    sock = await open_socket(session_url(server.ws_url, session, token=token or "_"))
    assert await sock.close_code() == code


async def test_foreign_token_and_unknown_session(server: Server, http: httpx.AsyncClient) -> None:
    mine, theirs = await create(http), await create(http)
    foreign = await open_socket(session_url(server.ws_url, mine, token=theirs["client_secret"]))
    assert await foreign.close_code() == 4401
    ghost = {"id": "ps_doesnotexist", "client_secret": ""}
    admin_view = await open_socket(session_url(server.ws_url, ghost, token=ADMIN_TOKEN))
    assert await admin_view.close_code() == 4404
    admin_feed = await open_socket(f"{server.ws_url}/ws/admin?token={mine['client_secret']}")
    assert await admin_feed.close_code() == 4401


async def test_origin_allow_list(server: Server, http: httpx.AsyncClient) -> None:
    session = await create(http)
    evil = await open_socket(session_url(server.ws_url, session), origin="https://evil.example")
    assert await evil.close_code() == 4403
    local = await open_socket(session_url(server.ws_url, session), origin="http://localhost:3000")
    assert (await local.recv())["type"] == "snapshot"
    await local.conn.close()


async def test_bad_frames(server: Server, http: httpx.AsyncClient) -> None:
    session, sock = await opened(server, http)
    bad = [
        ({"type": "teleport", "ref": "a"}, "unknown_command"),
        ({"type": "pay", "ref": "b"}, "invalid_field"),
        (
            {"type": "pay", "payment_method": {"card": "4242424242424241"}, "ref": "c"},
            "invalid_card",
        ),
        ({"type": "pay", "payment_method": "card", "ref": "d"}, "invalid_field"),
        ({"type": "interrupt", "reason": "bored", "ref": "e"}, "invalid_field"),
        ({"type": "retry", "ref": "f"}, "invalid_field"),
        ({"type": "pay", "payment_method": {"card": OK}, "amount": 1, "ref": "g"}, "invalid_field"),
    ]
    for frame, code in bad:
        await sock.send(frame)
        err = await sock.until(lambda m: m["type"] == "error")
        assert (err["data"]["code"], err["data"]["ref"]) == (code, frame["ref"])
    got = (await http.get(f"/api/sessions/{session['id']}", headers=merchant())).json()
    assert got["status"] == "created" and got["seq"] == 0, "bad frames changed nothing"
    await sock.conn.send("{not json")
    assert await sock.close_code() == 1008


async def test_non_map_and_oversized_frames(server: Server, http: httpx.AsyncClient) -> None:
    session, sock = await opened(server, http)
    await sock.conn.send("[1, 2, 3]")
    assert await sock.close_code() == 1008
    big = await connect(server, session)
    await big.recv()
    await big.conn.send('{"type": "ping", "pad": "' + "x" * 10_000 + '"}')
    assert await big.close_code() == 1009
    huge = await connect(server, session)
    await huge.recv()
    await huge.conn.send("x" * 200_000)
    assert await huge.close_code() == 1009


async def test_no_secret_in_logs(server: Server, http: httpx.AsyncClient) -> None:
    session, sock = await opened(server, http)
    await sock.conn.close()
    await http.get(f"/api/sessions/{session['id']}", headers=merchant())
    feed = await open_socket(f"{server.ws_url}/ws/admin?token={ADMIN_TOKEN}")
    await feed.recv()
    await feed.conn.close()
    await anyio.sleep(0.2)
    log = server.log()
    assert "/ws/sessions/" in log and "/ws/admin" in log, "the socket opens were logged"
    for secret in (
        session["client_secret"],
        ADMIN_TOKEN,
        server.env["PAYLIVE_API_KEY"],
        server.env["PAYLIVE_SECRET"],
        server.env["PAYLIVE_WEBHOOK_SECRET"],
    ):
        assert secret not in log


async def test_allowed_origins_setting_for_sockets_and_cors() -> None:
    with Server({"PAYLIVE_ALLOWED_ORIGINS": "https://shop.example"}) as own:
        async with httpx.AsyncClient(base_url=own.url) as client:
            session = await create(client)
            preflight = await client.options(
                f"/api/sessions/{session['id']}",
                headers={
                    "Origin": "https://shop.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "authorization",
                },
            )
            assert preflight.headers.get("access-control-allow-origin") == "https://shop.example"
            other = await client.options(
                f"/api/sessions/{session['id']}",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
            )
            assert "access-control-allow-origin" not in other.headers
        shop = await open_socket(session_url(own.ws_url, session), origin="https://shop.example")
        assert (await shop.recv())["type"] == "snapshot"
        await shop.conn.close()
        # With a list set, localhost is no longer allowed by default.
        local = await open_socket(session_url(own.ws_url, session), origin="http://localhost:3000")
        assert await local.close_code() == 4403


async def test_admin_feed_takes_only_ping(server: Server) -> None:
    feed = await open_socket(f"{server.ws_url}/ws/admin?token={ADMIN_TOKEN}")
    await feed.recv()
    await feed.send({"type": "ping"})
    assert (await feed.until(lambda m: m["type"] == "pong"))["session"] is None
    await feed.send({"type": "cancel", "ref": "x"})
    err = await feed.until(lambda m: m["type"] == "error")
    assert err["data"]["code"] == "unknown_command" and err["data"]["ref"] == "x"
    await feed.conn.send("]]")
    assert await feed.close_code() == 1008


@pytest.mark.parametrize(
    "card, status, cause, outcome_unknown",
    [
        ("4000000000000002", "interrupted", "declined", False),
        ("4000000000009995", "interrupted", "declined", False),
        ("4000000000009979", "failed", "failed", None),
        ("4000000000000119", "interrupted", "provider_error", False),
        ("4000000000000507", "interrupted", "network_error", True),
        ("4000000000000523", "interrupted", "network_error", True),
        ("4000000000000408", "interrupted", "timeout", True),
        ("5555555555554444", "succeeded", "succeeded", None),
    ],
)
async def test_every_sandbox_card(
    server: Server,
    http: httpx.AsyncClient,
    card: str,
    status: str,
    cause: str,
    outcome_unknown: bool | None,
) -> None:
    session, sock = await opened(server, http)
    await sock.send({"type": "pay", "payment_method": {"card": card}})
    await sock.state("processing")
    ended = await sock.until(lambda m: m["type"] == "state" and m["seq"] == 2, timeout=4)
    assert (ended["data"]["session"]["status"], ended["data"]["cause"]) == (status, cause)
    if outcome_unknown is not None:
        prompt = await sock.until(lambda m: m["type"] == "retry_prompt")
        assert prompt["data"]["outcome_unknown"] is outcome_unknown
    await sock.conn.close()
