"""Rotating the API key, the admin token and PAYLIVE_SECRET on a real server.

While a secret is rotated its variable lists the new value first and the old one
after it: both are accepted, the new one signs. Once the old one is gone it gets 401.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from paylive.web.auth import client_secret

from ..support.servers import Server

OLD = "old-api-key-0123456789"
NEW = "new-api-key-0123456789"
OLD_SIGN = "old-signing-secret-0123456789"
NEW_SIGN = "new-signing-secret-0123456789"
ORDER = {"order_id": "rot-1", "amount": 500, "currency": "EUR"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_old_and_new_keys_work_while_both_are_listed(tmp_path: Path) -> None:
    # The admin token comes from a file, as a mounted secret would.
    token_file = tmp_path / "admin_token"
    token_file.write_text("new-admin-token-0123456789,old-admin-token-0123456789\n")
    env = {
        "PAYLIVE_API_KEY": f"{NEW},{OLD}",
        "PAYLIVE_SECRET": f"{NEW_SIGN},{OLD_SIGN}",
        "PAYLIVE_ADMIN_TOKEN_FILE": str(token_file),
    }
    with Server(env, secrets=False) as server, httpx.Client(base_url=server.url) as http:
        sessions = []
        for key in (OLD, NEW):
            reply = http.post("/api/sessions", json=ORDER, headers=bearer(key))
            assert reply.status_code == 201, reply.text
            sessions.append(reply.json())
        assert http.post("/api/sessions", json=ORDER, headers=bearer("x" * 22)).status_code == 401
        session = sessions[0]
        # The server signs with the first secret; the old one still opens the session.
        assert session["client_secret"] == client_secret(NEW_SIGN, session["id"])
        old_signed = client_secret(OLD_SIGN, session["id"])
        reply = http.get(f"/api/sessions/{session['id']}", headers=bearer(old_signed))
        assert reply.status_code == 200, reply.text
        for token in ("new-admin-token-0123456789", "old-admin-token-0123456789"):
            assert http.get("/api/admin/sessions", headers=bearer(token)).status_code == 200


def test_a_key_no_longer_listed_gets_401() -> None:
    env = {"PAYLIVE_API_KEY": NEW, "PAYLIVE_SECRET": NEW_SIGN}
    with Server(env, secrets=False) as server, httpx.Client(base_url=server.url) as http:
        reply = http.post("/api/sessions", json=ORDER, headers=bearer(OLD))
        assert reply.status_code == 401
        assert reply.json()["error"]["code"] == "unauthorized"
        reply = http.post("/api/sessions", json=ORDER, headers=bearer(NEW))
        assert reply.status_code == 201
        session_id = reply.json()["id"]
        old_signed = client_secret(OLD_SIGN, session_id)
        assert (
            http.get(f"/api/sessions/{session_id}", headers=bearer(old_signed)).status_code == 401
        )


def test_serve_refuses_a_variable_and_its_file_naming_both(tmp_path: Path) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text(NEW)
    server = Server({"PAYLIVE_API_KEY_FILE": str(secret_file)})  # PAYLIVE_API_KEY is set too
    try:
        with pytest.raises(RuntimeError) as caught:
            server.start()
        assert "PAYLIVE_API_KEY and PAYLIVE_API_KEY_FILE are both set" in str(caught.value)
    finally:
        server.close()


def test_a_secret_file_saved_with_a_byte_order_mark_holds_the_secret(tmp_path: Path) -> None:
    """Notepad and Windows PowerShell's ``Set-Content -Encoding utf8`` open a UTF-8 file
    with a byte order mark (and end lines with CRLF): the key is the text after it, not
    a key that starts with an invisible U+FEFF and matches nothing sent."""
    key_file = tmp_path / "api_key"
    key_file.write_bytes(f"{NEW},{OLD}\r\n".encode("utf-8-sig"))
    env = {"PAYLIVE_API_KEY_FILE": str(key_file), "PAYLIVE_SECRET": NEW_SIGN}
    with Server(env, secrets=False) as server, httpx.Client(base_url=server.url) as http:
        for key in (NEW, OLD):
            reply = http.post("/api/sessions", json=ORDER, headers=bearer(key))
            assert reply.status_code == 201, reply.text


def test_a_rotation_written_one_entry_a_line_in_a_file_accepts_each(tmp_path: Path) -> None:
    """A mounted secret file holding a rotation one entry a line (as a secrets manager
    or ``printf '%s\\n' new old`` writes it), with a blank line and spaces around: each
    entry is a value of its own, the first line's signs."""
    key_file = tmp_path / "api_key"
    key_file.write_text(f"{NEW}\n\n  {OLD}  \n")
    sign_file = tmp_path / "secret"
    sign_file.write_text(f"{NEW_SIGN}\n{OLD_SIGN}\n")
    env = {"PAYLIVE_API_KEY_FILE": str(key_file), "PAYLIVE_SECRET_FILE": str(sign_file)}
    with Server(env, secrets=False) as server, httpx.Client(base_url=server.url) as http:
        for key in (NEW, OLD):
            reply = http.post("/api/sessions", json=ORDER, headers=bearer(key))
            assert reply.status_code == 201, reply.text
        session = reply.json()
        assert session["client_secret"] == client_secret(NEW_SIGN, session["id"])
        old_signed = client_secret(OLD_SIGN, session["id"])
        reply = http.get(f"/api/sessions/{session['id']}", headers=bearer(old_signed))
        assert reply.status_code == 200, reply.text


def test_serve_refuses_one_token_for_two_credentials() -> None:
    """The API key is tried before the staff tokens: a viewer whose token was also the
    API key got the shop's rights (refunds, ``complete``), and an API key that was also
    the admin token made every staff request the shop's. Neither may start."""
    viewer = f"vera:viewer:{NEW}"
    for env in (
        {"PAYLIVE_API_KEY": NEW, "PAYLIVE_STAFF_TOKENS": viewer},
        {"PAYLIVE_API_KEY": f"{NEW},{OLD}", "PAYLIVE_ADMIN_TOKEN": OLD},
    ):
        server = Server(env)
        try:
            with pytest.raises(RuntimeError) as caught:
                server.start()
            assert "hold the same token" in str(caught.value)
            # Named by its variables, never written out.
            assert NEW not in server.log() and OLD not in server.log()
        finally:
            server.close()


def test_serve_refuses_a_signing_secret_that_is_a_bearer_token() -> None:
    """PAYLIVE_SECRET signs client secrets and tickets: equal to the API key (here the
    old entry of its rotation), whoever holds the key could sign a customer's secret
    for any session. The server must not start, and names both variables, never the
    value."""
    server = Server({"PAYLIVE_API_KEY": f"{NEW},{OLD}", "PAYLIVE_SECRET": f"{NEW_SIGN},{OLD}"})
    try:
        with pytest.raises(RuntimeError) as caught:
            server.start()
        said = str(caught.value)
        assert "PAYLIVE_SECRET and PAYLIVE_API_KEY hold the same secret" in said, said
        assert OLD not in server.log() and NEW_SIGN not in server.log()
    finally:
        server.close()


def test_the_metrics_token_is_rotated_as_every_secret_is(tmp_path: Path) -> None:
    """The scraper's token was one value: rotating it meant a window in which the
    scrapes sent with the old one (or the new one) were refused. Listed one entry a
    line in its file, as a secrets manager writes it, both are accepted; a third is
    401 as before."""
    token_file = tmp_path / "metrics_token"
    token_file.write_text("new-metrics-token-0123456789\nold-metrics-token-0123456789\n")
    env = {"PAYLIVE_METRICS_TOKEN_FILE": str(token_file)}
    with Server(env) as server, httpx.Client(base_url=server.url) as http:
        for token in ("new-metrics-token-0123456789", "old-metrics-token-0123456789"):
            reply = http.get("/metrics", headers=bearer(token))
            assert reply.status_code == 200, reply.text
            assert "paylive_in_flight" in reply.text
        for headers in (bearer("third-metrics-token-0123456789"), {}):
            reply = http.get("/metrics", headers=headers)
            assert reply.status_code == 401, reply.text
            assert reply.json()["error"]["code"] == "unauthorized"
            assert reply.headers["www-authenticate"] == "Bearer"
