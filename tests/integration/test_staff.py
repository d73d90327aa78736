"""Staff roles, the audit trail and effects done by hand, against a real server on its
own Redis and the machine's PostgreSQL (docs/protocol.md sections 8.1 and 8.2): a
viewer reads and is refused every action with 403 ``role_not_allowed``, an operator
refunds and resolves, every action is in the trail with its staff name, also once
Redis forgot the session (then from PostgreSQL)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from ..support import postgres, redisproc
from ..support.client import admin, create, merchant
from ..support.postgres import Database
from ..support.servers import Server
from ..support.waiting import until

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        not postgres.reachable() and not os.environ.get("PAYLIVE_REQUIRE_POSTGRES"),
        reason="no PostgreSQL on 127.0.0.1:5432 (.ci/run starts one)",
    ),
    pytest.mark.skipif(redisproc.REDIS_SERVER is None, reason="redis-server is not on PATH"),
]

VIEWER = "viewer-token-0123456789"
OPERATOR = "operator-token-0123456789"
ADMIN = "admin2-token-0123456789"
OK = "4242424242424242"
WAIT_S = 15.0


@pytest.fixture(scope="module")
def archive_db() -> Iterator[Database]:
    """The module's server's archive (one for the module, as its server is)."""
    with Database() as database:
        yield database


def SERVER_ENV(request: pytest.FixtureRequest) -> dict[str, str]:
    archive_db: Database = request.getfixturevalue("archive_db")
    redis: redisproc.RedisProc = request.getfixturevalue("redis")
    tmp: pytest.TempPathFactory = request.getfixturevalue("tmp_path_factory")
    staff_file = Path(tmp.mktemp("staff")) / "staff"
    staff_file.write_text(
        f"# who may do what\nvera:viewer:{VIEWER}\n\notto:operator:{OPERATOR}\nada:admin:{ADMIN}\n"
    )
    return {
        "PAYLIVE_REDIS_URL": redis.url,
        "PAYLIVE_DATABASE_URL": archive_db.url,
        "PAYLIVE_REDIS_RETENTION_MS": "1000",
        "PAYLIVE_STAFF_TOKENS_FILE": str(staff_file),
        "PAYLIVE_EFFECT_RETRY_BASE_MS": "100",
        "PAYLIVE_EFFECT_RETRY_CAP_MS": "400",
    }


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def paid(http: httpx.AsyncClient) -> str:
    session = await create(http, amount=100)
    sid = str(session["id"])
    pay = {"payment_method": {"card": OK}}
    reply = await http.post(f"/api/sessions/{sid}/attempts", json=pay, headers=merchant())
    assert reply.status_code == 202, reply.text

    async def succeeded() -> bool:
        got = await http.get(f"/api/sessions/{sid}", headers=merchant())
        return bool(got.json()["status"] == "succeeded")

    await until(succeeded, WAIT_S)
    return sid


async def test_who_am_i_and_what_may_i_do(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        expected = {
            VIEWER: ("vera", "viewer", False, False),
            OPERATOR: ("otto", "operator", True, False),
            ADMIN: ("ada", "admin", True, True),
        }
        for token, (name, role, act, settings) in expected.items():
            me = (await http.get("/api/admin/me", headers=bearer(token))).json()
            assert (me["name"], me["role"]) == (name, role)
            assert (me["may"]["act"], me["may"]["settings"]) == (act, settings)
        old = (await http.get("/api/admin/me", headers=admin())).json()
        assert (old["name"], old["role"]) == ("admin", "admin"), "PAYLIVE_ADMIN_TOKEN is an admin"
        shown = await http.get("/api/admin/settings", headers=bearer(ADMIN))
        assert shown.status_code == 200
        assert {"name": "vera", "role": "viewer"} in shown.json()["staff"]
        assert VIEWER not in shown.text and OPERATOR not in shown.text, "no secret shown"
        denied = await http.get("/api/admin/settings", headers=bearer(OPERATOR))
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "role_not_allowed"
        wrong = await http.get("/api/admin/me", headers=bearer("not-a-staff-token-0123"))
        assert wrong.status_code == 401


async def test_a_viewer_reads_and_is_refused_every_action(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        sid = await paid(http)
        viewer = bearer(VIEWER)
        for path in (
            "/api/admin/sessions?status=all",
            "/api/admin/summary",
            "/api/admin/effects",
            f"/api/admin/sessions/{sid}/events",
            "/api/admin/deliveries",
            "/api/admin/search",
            "/api/admin/audit",
            f"/api/sessions/{sid}",
            f"/api/admin/sandbox/ledger?session={sid}",
        ):
            reply = await http.get(path, headers=viewer)
            assert reply.status_code == 200, (path, reply.text)
        actions: list[tuple[str, dict[str, Any]]] = [
            (f"/api/sessions/{sid}/refunds", {"amount": 10}),
            (f"/api/admin/sessions/{sid}/review", {"by": "vera", "note": "n"}),
            (f"/api/admin/effects/{sid}:1:refund.1/done", {"note": "n"}),
            ("/api/admin/deliveries/evt_x_1_succeeded/retry", {}),
            ("/api/admin/sandbox/outage", {"seconds": 1}),
        ]
        for path, body in actions:
            reply = await http.post(path, json=body, headers=viewer)
            assert reply.status_code == 403, (path, reply.text)
            assert reply.json()["error"]["code"] == "role_not_allowed", path
            assert "viewer" in reply.json()["error"]["message"]
        outage = await http.post(
            "/api/admin/sandbox/outage", json={"seconds": 1}, headers=bearer(OPERATOR)
        )
        assert outage.json()["error"]["code"] == "role_not_allowed", "the switch is the admin's"
        got = (await http.get(f"/api/sessions/{sid}", headers=merchant())).json()
        assert "refunds" not in got and got["seq"] == 2, "nothing was changed"
        # Sockets: every role may watch (they carry no action).
        async with connect(f"{server.ws_url}/ws/admin?token={VIEWER}") as ws:
            assert '"admin.snapshot"' in str(await ws.recv())


async def test_an_operator_refunds_and_every_action_is_audited_also_from_postgres(
    server: Server, archive_db: Database, redis: redisproc.RedisProc
) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        sid = await paid(http)
        made = await http.post(
            f"/api/sessions/{sid}/refunds",
            json={"amount": 25, "reason": "damaged"},
            headers=bearer(OPERATOR),
        )
        assert made.status_code == 202, made.text
        assert made.json()["refund"]["requested_by"] == "otto"
        by_shop = await http.post(
            f"/api/sessions/{sid}/refunds", json={"amount": 5}, headers=merchant()
        )
        assert by_shop.status_code == 202, by_shop.text

        async def trail() -> list[dict[str, Any]] | None:
            reply = await http.get(f"/api/admin/audit?session={sid}", headers=bearer(VIEWER))
            entries = reply.json()["entries"]
            return entries if len(entries) == 2 else None

        newest, oldest = await until(trail, WAIT_S)
        assert (oldest["staff"], oldest["role"], oldest["action"]) == ("otto", "operator", "refund")
        assert oldest["details"] == {"amount": 25, "reason": "damaged"}
        assert oldest["session"] == sid and oldest["address"] == "127.0.0.1"
        assert (newest["staff"], newest["action"]) == ("merchant", "refund")
        by_staff = await http.get("/api/admin/audit?staff=otto", headers=bearer(VIEWER))
        assert oldest["id"] in [e["id"] for e in by_staff.json()["entries"]]
        assert newest["id"] not in [e["id"] for e in by_staff.json()["entries"]]
        window = await http.get(
            f"/api/admin/audit?from={oldest['at']}&to={oldest['at'] + 1}", headers=bearer(VIEWER)
        )
        assert oldest["id"] in [e["id"] for e in window.json()["entries"]]
        admin_view = await http.get(f"/api/admin/sessions/{sid}/events", headers=bearer(VIEWER))
        assert [e["id"] for e in admin_view.json()["session"]["audit"]] == [
            oldest["id"],
            newest["id"],
        ]

        # Both refunds done, then Redis forgets the ended session: the trail is in PostgreSQL.
        def forgotten() -> bool:
            held = redisproc.command(redis.port, "EXISTS", f"paylive:{{{sid}}}:s")
            return held == b":0\r\n"

        await until(forgotten, 30.0)
        # Its history for staff too, as it last was (it answered 404 once Redis forgot it).
        history = await http.get(f"/api/admin/sessions/{sid}/events", headers=bearer(VIEWER))
        assert history.status_code == 200, history.text
        body = history.json()
        seqs = [e["seq"] for e in body["events"]]
        assert body["complete"] and seqs == list(range(1, body["session"]["seq"] + 1))
        assert body["session"]["amount_refunded"] == 30
        assert [e["status"] for e in body["session"]["effects"]] == ["done", "done"]
        assert [e["id"] for e in body["session"]["audit"]] == [oldest["id"], newest["id"]]
        causes = [e["data"]["cause"] for e in body["events"] if e["type"] == "state"]
        assert causes.count("effect_done") == 2, causes
        again = await http.get(f"/api/admin/audit?session={sid}", headers=bearer(VIEWER))
        assert [e["id"] for e in again.json()["entries"]] == [newest["id"], oldest["id"]]
        assert again.json()["entries"][1]["staff"] == "otto"
        assert again.json()["next"] is None  # not a full page
        # Page by page from PostgreSQL, one entry a page: each once, by `next`.
        first = (
            await http.get(f"/api/admin/audit?session={sid}&limit=1", headers=bearer(VIEWER))
        ).json()
        assert [e["id"] for e in first["entries"]] == [newest["id"]]
        assert first["next"] == f"{newest['at']}:{newest['id']}"
        second = await http.get(
            f"/api/admin/audit?session={sid}&limit=1&before={first['next']}", headers=bearer(VIEWER)
        )
        assert [e["id"] for e in second.json()["entries"]] == [oldest["id"]]
        # Read backwards, newer entries stand past the page's first one.
        assert second.json()["prev"] == second.json()["next"] == f"{oldest['at']}:{oldest['id']}"
        # Forwards from the oldest, by `prev`: each page the oldest cut past the place.
        ahead = (
            await http.get(
                f"/api/admin/audit?session={sid}&limit=1&after={second.json()['next']}",
                headers=bearer(VIEWER),
            )
        ).json()
        assert [e["id"] for e in ahead["entries"]] == [newest["id"]]
        assert ahead["prev"] == ahead["next"] == first["next"]
        last = (
            await http.get(
                f"/api/admin/audit?session={sid}&after={ahead['prev']}", headers=bearer(VIEWER)
            )
        ).json()
        assert last == {"entries": [], "next": None, "prev": None}
        for bad in ("x", "12:ps_1", ":aud_1", f"{2**63}:aud_1", "1:aud_%00"):
            for place in ("before", "after"):
                refused = await http.get(f"/api/admin/audit?{place}={bad}", headers=bearer(VIEWER))
                assert refused.status_code == 422, (place, bad, refused.text)
                error = refused.json()["error"]
                assert error["code"] == "invalid_field" and error["message"].startswith(place)

        # The whole trail (the engine's, in Redis, with PostgreSQL's), read forwards from
        # before the first entry page by page, is what reading it backwards reads.
        async def read(**params: str) -> dict[str, Any]:
            reply = await http.get("/api/admin/audit", params=params, headers=bearer(VIEWER))
            assert reply.status_code == 200, reply.text
            return dict(reply.json())

        backwards: list[str] = []
        page = await read(limit="1")
        while page["entries"]:
            backwards += [e["id"] for e in page["entries"]]
            if page["next"] is None:
                break
            page = await read(limit="1", before=page["next"])
        forwards: list[str] = []
        page = await read(limit="1", after="0:aud_")
        while page["entries"]:
            forwards = [e["id"] for e in page["entries"]] + forwards
            if page["prev"] is None:
                break
            page = await read(limit="1", after=page["prev"])
        assert forwards == backwards and {oldest["id"], newest["id"]} <= set(forwards)
    rows = archive_db.fetch("SELECT staff, action FROM paylive_audit WHERE session_id = $1", sid)
    assert sorted((r["staff"], r["action"]) for r in rows) == [
        ("merchant", "refund"),
        ("otto", "refund"),
    ]


async def test_an_effect_done_by_hand_stops_retrying_and_is_audited(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        sid = await paid(http)
        down = await http.post(
            "/api/admin/sandbox/outage", json={"seconds": 30}, headers=bearer(ADMIN)
        )
        assert down.status_code == 200
        try:
            made = await http.post(
                f"/api/sessions/{sid}/refunds", json={"amount": 100}, headers=merchant()
            )
            assert made.status_code == 202
            effect_id = made.json()["refund"]["id"]

            async def tried() -> bool:
                reply = await http.get(
                    f"/api/admin/effects?session={sid}&status=pending", headers=bearer(VIEWER)
                )
                found = reply.json()["effects"]
                return bool(found and found[0]["tries"] >= 1)

            await until(tried, WAIT_S)
            bad = [
                (f"/api/admin/effects/{effect_id}/done", {}, 422, "invalid_field"),
                (f"/api/admin/effects/{effect_id}/done", {"note": " "}, 422, "invalid_field"),
                ("/api/admin/effects/nonsense/done", {"note": "n"}, 404, "not_found"),
                # Other spellings of the effect's id once marked it done, and the audit
                # trail recorded the spelling sent, not the effect's id.
                (f"/api/admin/effects/{sid}:01:refund.1/done", {"note": "n"}, 404, "not_found"),
                (f"/api/admin/effects/{sid}:1:refund.01/done", {"note": "n"}, 404, "not_found"),
                (f"/api/admin/effects/{sid}:1:refund./done", {"note": "n"}, 404, "not_found"),
                (f"/api/admin/effects/{sid}:1:void/done", {"note": "n"}, 404, "unknown_effect"),
            ]
            for path, body, status, code in bad:
                reply = await http.post(path, json=body, headers=bearer(OPERATOR))
                assert (reply.status_code, reply.json()["error"]["code"]) == (status, code), path
            done = await http.post(
                f"/api/admin/effects/{effect_id}/done",
                json={"note": "refunded in the provider's dashboard"},
                headers=bearer(OPERATOR),
            )
            assert done.status_code == 200, done.text
            [effect] = done.json()["effects"]
            assert (effect["status"], effect["done_by"]) == ("done", "otto")
            assert done.json()["amount_refunded"] == 100
            twice = await http.post(
                f"/api/admin/effects/{effect_id}/done", json={"note": "n"}, headers=bearer(OPERATOR)
            )
            assert twice.status_code == 409 and twice.json()["error"]["code"] == "invalid_state"
        finally:
            await http.post("/api/admin/sandbox/outage", json={"seconds": 0}, headers=admin())
        ledger = await http.get(f"/api/admin/sandbox/ledger?session={sid}", headers=admin())
        assert [e["kind"] for e in ledger.json()["entries"]] == ["charge"], "never made by paylive"
        trail = await http.get(f"/api/admin/audit?session={sid}", headers=bearer(VIEWER))
        actions = [(e["staff"], e["action"]) for e in trail.json()["entries"]]
        assert actions == [("otto", "effect_done_by_hand"), ("merchant", "refund")]
        switches = await http.get("/api/admin/audit?staff=ada", headers=bearer(VIEWER))
        assert [e["action"] for e in switches.json()["entries"]][:1] == ["sandbox_outage"]


async def test_a_nul_in_a_session_id_is_no_session_not_a_server_error(server: Server) -> None:
    # PostgreSQL's text cannot hold NUL: asking the archive for such an id was an error
    # from PostgreSQL, and a 500 for the client, where no such session can exist.
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        trail = await http.get("/api/admin/audit?session=ps_%00x", headers=bearer(VIEWER))
        assert trail.status_code == 200, trail.text
        assert trail.json() == {"entries": [], "next": None, "prev": None}
        session = await http.get("/api/sessions/ps_%00x", headers=merchant())
        assert session.status_code == 404, session.text
        assert session.json()["error"]["code"] == "not_found"


async def test_texts_with_control_characters_are_refused_and_change_nothing(
    server: Server,
) -> None:
    # Only C0 controls were refused: DEL, C1 (U+0085 is a line break to some readers) and
    # bidirectional overrides, which show a reason reversed in the trail, went through.
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        sid = await paid(http)
        operator = bearer(OPERATOR)
        bad: list[tuple[str, dict[str, Any], str]] = [
            (f"/api/sessions/{sid}/refunds", {"amount": 1, "reason": "a\x7fb"}, "reason"),
            (f"/api/sessions/{sid}/refunds", {"amount": 1, "reason": "a\x85b"}, "reason"),
            (f"/api/sessions/{sid}/refunds", {"reason": "\u202edegamad"}, "reason"),
            (f"/api/admin/sessions/{sid}/review", {"by": "otto\nada", "note": "n"}, "by"),
            (f"/api/admin/sessions/{sid}/review", {"by": "otto", "note": "\u2066n"}, "note"),
            (f"/api/admin/effects/{sid}:1:refund.1/done", {"note": "n\x9b"}, "note"),
        ]
        for path, body, field in bad:
            reply = await http.post(path, json=body, headers=operator)
            assert reply.status_code == 422, (body, reply.text)
            error = reply.json()["error"]
            assert error["code"] == "invalid_field" and error["message"].startswith(field), body
        fine = {"amount": 1, "reason": "two lines:\nreturned\tdamaged"}
        made = await http.post(f"/api/sessions/{sid}/refunds", json=fine, headers=operator)
        assert made.status_code == 202, made.text
        got = (await http.get(f"/api/sessions/{sid}", headers=merchant())).json()
        assert [r["reason"] for r in got["refunds"]] == [fine["reason"]], "only the good one"
        trail = await http.get(f"/api/admin/audit?session={sid}", headers=bearer(VIEWER))
        assert [e["details"]["reason"] for e in trail.json()["entries"]] == [fine["reason"]]
