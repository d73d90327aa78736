"""Bad input that Schemathesis cannot send, against one real ``paylive serve``: bytes an
HTTP client would tidy (headers given twice, bodies HTTP cannot parse, JSON outside
UTF-8, integers of thousands of digits), a repeated query parameter, a webhook
signature's endless timestamp and WebSocket frames that break RFC 6455. Each gets the
status and error code of docs/protocol.md (on a socket, a close code), changes nothing,
and leaves no traceback in the server's log (found in a review on 2026-12-07)."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
import time
from typing import Any

import pytest

from paylive.core.signature import signature_header

from ..support import waiting
from ..support.servers import ADMIN_TOKEN, API_KEY, WEBHOOK_SECRET, Server

CREATE = b'{"order_id": "o-1", "amount": 100, "currency": "EUR"}'
AUTH = b"Authorization: Bearer " + API_KEY.encode()
LENGTH = b"Content-Length: %d" % len(CREATE)


def CHECK_SERVER_LOG(log: str) -> None:
    # A client's bad input is answered, never an exception the server logs.
    assert "Traceback" not in log, log
    assert "Exception in ASGI application" not in log, log


def exchange(port: int, request: bytes, wait_s: float = 3.0) -> bytes:
    return waiting.exchange(port, request, wait_s)


def answer_of(raw: bytes) -> tuple[int, dict[str, str], Any]:
    """(status, headers, JSON body) of one HTTP/1.1 answer, strictly: the body must be
    JSON as any parser reads it."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ")[1]), headers, json.loads(body) if body else None


def request(method: str, path: str, headers: list[bytes], body: bytes = b"") -> bytes:
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: 127.0.0.1", *headers]
    return b"\r\n".join([*head, b"Connection: close"]) + b"\r\n\r\n" + body


def call(
    server: Server, method: str, path: str, token: str = API_KEY, body: bytes | None = None
) -> tuple[int, Any]:
    headers = [f"Authorization: Bearer {token}".encode()]
    if body is not None:
        headers += [b"Content-Type: application/json", b"Content-Length: %d" % len(body)]
    status, _, payload = answer_of(
        exchange(server.port, request(method, path, headers, body or b""))
    )
    return status, payload


def created(server: Server) -> int:
    status, summary = call(server, "GET", "/api/admin/summary", ADMIN_TOKEN)
    assert status == 200
    return int(summary["by_status"]["created"])


@pytest.fixture
def session(server: Server) -> dict[str, Any]:
    status, made = call(server, "POST", "/api/sessions", body=CREATE)
    assert status == 201, made
    return dict(made)


def no_traceback_since(server: Server, offset: int) -> None:
    time.sleep(0.1)
    logged = server.log()[offset:]
    assert "Traceback" not in logged, f"the server logged an exception:\n{logged}"


# A webhook signature's timestamp of thousands of digits


def test_a_webhook_timestamp_of_thousands_of_digits_is_a_bad_signature(
    server: Server, session: dict[str, Any]
) -> None:
    offset = len(server.log())
    event = {
        "id": "evt_long_t",
        "type": "payment.succeeded",
        "session": session["id"],
        "attempt": 1,
        "idempotency_key": f"{session['id']}:1",
        "failure": None,
    }
    body = json.dumps(event).encode()
    good = signature_header(WEBHOOK_SECRET, int(time.time()), body)
    for timestamp in ("1" * 5000, "0" * 4400 + str(int(time.time()))):
        signature = f"t={timestamp}," + good.split(",", 1)[1]
        headers = [
            f"Paylive-Signature: {signature}".encode(),
            b"Content-Type: application/json",
            b"Content-Length: %d" % len(body),
        ]
        raw = exchange(server.port, request("POST", "/webhooks/sandbox", headers, body))
        status, _, payload = answer_of(raw)
        assert (status, payload["error"]["code"]) == (400, "invalid_signature"), raw[:300]
    status, now = call(server, "GET", f"/api/sessions/{session['id']}")
    assert (status, now["status"], now["seq"]) == (200, "created", 0)
    no_traceback_since(server, offset)


# Requests HTTP cannot parse: the protocol's JSON error, not uvicorn's plain text


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([AUTH, LENGTH, LENGTH], CREATE),
        ([AUTH, LENGTH, b"Content-Length: 5"], CREATE),
        ([AUTH, b"Content-Length: 5", b"Transfer-Encoding: chunked"], CREATE),
        ([AUTH, b"Content-Length: -1"], CREATE),
        ([AUTH, b"Transfer-Encoding: chunked"], b"zz\r\n" + CREATE + b"\r\n0\r\n\r\n"),
        ([AUTH, b"Transfer-Encoding: chunked"], b"f" * 20 + b"\r\n" + CREATE + b"\r\n0\r\n\r\n"),
        ([AUTH, LENGTH, b"Idempotency-Key: a\x01b"], CREATE),
    ],
    ids=[
        "two-lengths",
        "conflicting-lengths",
        "length-and-chunked",
        "negative-length",
        "chunk-size-not-hex",
        "chunk-size-endless",
        "control-byte-in-header",
    ],
)
def test_a_request_http_cannot_parse_is_400_invalid_request_as_json(
    server: Server, headers: list[bytes], body: bytes
) -> None:
    before, offset = created(server), len(server.log())
    raw = exchange(server.port, request("POST", "/api/sessions", headers, body))
    status, answer_headers, payload = answer_of(raw)
    assert status == 400, raw[:300]
    assert answer_headers["content-type"].startswith("application/json"), raw[:300]
    assert payload["error"]["code"] == "invalid_request", payload
    assert created(server) == before, "nothing made"
    no_traceback_since(server, offset)


# WebSocket frames that break RFC 6455: a close code, not a dropped connection


def masked(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    key = os.urandom(4)
    body = bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))
    return bytes([(0x80 if fin else 0) | opcode, 0x80 | len(payload)]) + key + body


def close_code_after(server: Server, session: dict[str, Any], frame: bytes) -> int | None:
    """Open the session's socket, send ``frame``; the close code the server sent
    (None: it dropped the connection without a close frame)."""
    key = base64.b64encode(os.urandom(16))
    handshake = request(
        "GET",
        f"/ws/sessions/{session['id']}?token={session['client_secret']}",
        [b"Upgrade: websocket", b"Sec-WebSocket-Key: " + key, b"Sec-WebSocket-Version: 13"],
    ).replace(b"Connection: close", b"Connection: Upgrade")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=3)
    received = b""
    try:
        sock.sendall(handshake)
        while b'"snapshot"' not in received:
            received += sock.recv(65536)
        sock.sendall(frame)
        received += waiting.read_to_close(sock)
    finally:
        sock.close()
    # The server's frames after the handshake: the last is the close, if any.
    frames = received.partition(b"\r\n\r\n")[2]
    code = None
    while len(frames) >= 2:
        opcode, size = frames[0] & 0x0F, frames[1] & 0x7F
        start = 2
        if size == 126:
            size, start = struct.unpack("!H", frames[2:4])[0], 4
        if opcode == 0x8 and size >= 2:
            code = struct.unpack("!H", frames[start : start + 2])[0]
        frames = frames[start + size :]
    return code


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (masked(0x0, b"x"), 1002),
        (masked(0x3, b"x"), 1002),
        (masked(0x9, b"x", fin=False), 1002),
        (bytes([0x81, 0x01]) + b"x", 1002),
        (masked(0x8, b"\x03\xe7"), 1002),
        (masked(0x1, b"\xff\xfe"), 1007),
    ],
    ids=[
        "continuation-first",
        "reserved-opcode",
        "fragmented-ping",
        "unmasked",
        "close-code-999",
        "text-not-utf-8",
    ],
)
def test_a_frame_that_breaks_rfc_6455_is_closed_with_its_close_code(
    server: Server, session: dict[str, Any], frame: bytes, code: int
) -> None:
    offset = len(server.log())
    assert close_code_after(server, session, frame) == code
    status, now = call(server, "GET", f"/api/sessions/{session['id']}")
    assert (status, now["status"], now["seq"]) == (200, "created", 0)
    no_traceback_since(server, offset)


# JSON is UTF-8, and a number beyond a double is 422 whatever its length


@pytest.mark.parametrize(
    "body",
    [
        b"\xef\xbb\xbf" + CREATE,
        CREATE.decode().encode("utf-16"),
        CREATE.decode().encode("utf-16-le"),
        CREATE.decode().encode("utf-32"),
    ],
    ids=["utf-8-bom", "utf-16", "utf-16-le-without-bom", "utf-32"],
)
def test_a_body_that_is_not_utf_8_json_is_400_invalid_json(server: Server, body: bytes) -> None:
    before = created(server)
    status, payload = call(server, "POST", "/api/sessions", body=body)
    assert (status, payload["error"]["code"]) == (400, "invalid_json"), payload
    assert created(server) == before, "nothing made"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"order_id": "o", "amount": ' + b"9" * 5000 + b', "currency": "EUR"}', "amount"),
        (b'{"order_id": "o", "amount": -' + b"9" * 5000 + b', "currency": "EUR"}', "amount"),
        (
            b'{"order_id": "o", "amount": 1, "currency": "EUR", "metadata": {"n": '
            + b"1" * 4400
            + b"}}",
            "metadata.n",
        ),
    ],
    ids=["amount", "negative-amount", "metadata"],
)
def test_an_integer_of_thousands_of_digits_is_422_invalid_field_naming_it(
    server: Server, body: bytes, field: str
) -> None:
    before = created(server)
    status, payload = call(server, "POST", "/api/sessions", body=body)
    assert (status, payload["error"]["code"]) == (422, "invalid_field"), payload
    assert payload["error"]["message"].startswith(field + ":"), payload
    assert created(server) == before, "nothing made"


# Headers that decide who asks and whether a command runs once, given twice


@pytest.mark.parametrize(
    "twice",
    [
        [AUTH, b"Authorization: Bearer nobody"],
        [b"Authorization: Bearer nobody", AUTH],
        [AUTH, AUTH],
        [AUTH, b"Idempotency-Key: k-1", b"Idempotency-Key: k-2"],
    ],
    ids=[
        "authorization-good-then-bad",
        "authorization-bad-then-good",
        "authorization-same",
        "idempotency-key",
    ],
)
def test_a_header_given_twice_is_400_invalid_request_and_makes_nothing(
    server: Server, twice: list[bytes]
) -> None:
    before = created(server)
    headers = [*twice, b"Content-Type: application/json", LENGTH]
    raw = exchange(server.port, request("POST", "/api/sessions", headers, CREATE))
    status, _, payload = answer_of(raw)
    assert (status, payload["error"]["code"]) == (400, "invalid_request"), raw[:300]
    assert created(server) == before, "nothing made"


def test_authorization_twice_on_a_read_is_400_too(server: Server, session: dict[str, Any]) -> None:
    admin = f"Authorization: Bearer {ADMIN_TOKEN}".encode()
    for path in ("/api/admin/summary", f"/api/sessions/{session['id']}"):
        raw = exchange(server.port, request("GET", path, [admin, AUTH]))
        status, _, payload = answer_of(raw)
        assert (status, payload["error"]["code"]) == (400, "invalid_request"), raw[:300]


# A query parameter given twice


@pytest.mark.parametrize(
    "query",
    [
        "/api/admin/sessions?limit=5&limit=abc",
        "/api/admin/sessions?limit=abc&limit=5",
        "/api/admin/sessions?status=all&status=active",
        "/api/admin/effects?limit=1&limit=2",
        "/api/admin/audit?limit=1&limit=2",
        "/api/admin/audit?from=1&from=2",
        "/api/admin/search?limit=1&limit=2",
        "/api/admin/deliveries?limit=1&limit=2",
    ],
)
def test_a_query_parameter_given_twice_is_422_invalid_field_naming_it(
    server: Server, query: str
) -> None:
    status, payload = call(server, "GET", query, ADMIN_TOKEN)
    name = query.split("?")[1].split("=")[0]
    assert (status, payload["error"]["code"]) == (422, "invalid_field"), payload
    assert payload["error"]["message"].startswith(name + ":"), payload


def test_the_events_apis_refuse_a_cursor_given_twice(
    server: Server, session: dict[str, Any]
) -> None:
    status, payload = call(server, "GET", "/api/events?after=0&after=1")
    assert (status, payload["error"]["code"]) == (422, "invalid_field"), payload
    poll = f"/api/sessions/{session['id']}/events?since=0&since=x&wait=0"
    status, payload = call(server, "GET", poll, session["client_secret"])
    assert (status, payload["error"]["code"]) == (422, "invalid_field"), payload


def test_the_events_api_refuses_a_cursor_beyond_every_one_given(server: Server) -> None:
    # Answered an empty page: a shop holding a cursor the log lost (a Redis restarted
    # empty) was never told, and would have skipped the new events below it.
    status, payload = call(server, "GET", f"/api/events?after={2**60}")
    assert (status, payload["error"]["code"]) == (422, "invalid_field"), payload
    assert payload["error"]["message"].startswith("after:"), payload
    status, payload = call(server, "GET", "/api/events?after=0")
    assert status == 200 and payload["next"] >= 0, payload


def test_a_socket_with_since_given_twice_is_closed_with_1008(
    server: Server, session: dict[str, Any]
) -> None:
    key = base64.b64encode(os.urandom(16))
    path = f"/ws/sessions/{session['id']}?token={session['client_secret']}&since=0&since=5"
    headers = [b"Upgrade: websocket", b"Sec-WebSocket-Key: " + key, b"Sec-WebSocket-Version: 13"]
    handshake = request("GET", path, headers).replace(b"Connection: close", b"Connection: Upgrade")
    frames = exchange(server.port, handshake).partition(b"\r\n\r\n")[2]
    assert frames[:1] == b"\x88", frames[:80]  # the first frame is the close
    assert struct.unpack("!H", frames[2:4])[0] == 1008, frames[:80]
    assert b"since" in frames, frames[:80]
