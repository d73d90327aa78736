"""The HTTP API's description (docs/openapi.json) against the routes, and the server
against the description: Schemathesis fuzzes a real ``paylive serve`` from it.

The suite runs a short pass (``PAYLIVE_FUZZ_EXAMPLES``, 10 per operation and mode); README
says how to run a longer one.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from paylive.core.protocol import ErrorCode
from paylive.core.signature import signature_header
from paylive.server.app import API_ROUTES
from paylive.web import pages

from ..support.client import merchant
from ..support.servers import ADMIN_TOKEN, API_KEY, WEBHOOK_SECRET, Server

ROOT = Path(__file__).resolve().parents[2]
DOCUMENT = json.loads((ROOT / "docs" / "openapi.json").read_text())
EXAMPLES = int(os.environ.get("PAYLIVE_FUZZ_EXAMPLES", "10"))

# The sandbox posts nowhere: Schemathesis is the only client. Schemathesis reads an
# event stream to its end: streams end after a fifth of a second, long enough for the
# admin feed's summary (every 50 ms here) to come in every one, as it did in the
# one-second streams that summaries came once a second into; a stream's snapshot is
# written before it ends, however short its life. Polls are held a fifth of a second.
SERVER_ENV = {
    "PAYLIVE_SANDBOX_WEBHOOK_URL": "http://127.0.0.1:9/nowhere",
    "PAYLIVE_STREAM_LIFETIME_MS": "200",
    "PAYLIVE_SUMMARY_INTERVAL_MS": "50",
    "PAYLIVE_POLL_HOLD_MS": "200",
}
# Pages for people (HTML, redirects, static files) are not the API.
PAGES = {route.path for route in pages.routes}


def test_the_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1")
    from openapi_spec_validator import validate  # here: half a CPU-second to import

    validate(DOCUMENT)


def test_the_document_describes_every_route_and_no_other() -> None:
    served = {
        (route.path, method.lower())
        for route in API_ROUTES
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    described = {(path, method) for path, item in DOCUMENT["paths"].items() for method in item}
    assert served == described
    assert not PAGES & {path for path, _ in described}


def test_every_error_code_is_described() -> None:
    described = set(
        DOCUMENT["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"][
            "enum"
        ]
    )
    assert {code.value for code in ErrorCode} <= described


@pytest.fixture(scope="module")
def plain_http(server: Server) -> Iterator[httpx.Client]:
    """One client for the module's own requests: ``httpx.post`` made a client, and so
    an SSL context (about 30 CPU-ms), for every session a case asks for. A connection
    a request, as before: no idle one for the server to close under the next."""
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=server.url, limits=limits) as client:
        yield client


def test_the_server_serves_the_document(plain_http: httpx.Client) -> None:
    reply = plain_http.get("/openapi.json")
    assert reply.status_code == 200
    assert reply.json() == DOCUMENT


@pytest.fixture(scope="module")
def schema(server: Server) -> Any:
    import schemathesis

    return schemathesis.openapi.from_url(server.url + "/openapi.json")


# Every operation in both modes (Schemathesis's GenerationMode, by value: the module
# imports Schemathesis and Hypothesis only when it runs, not in every process that
# collects it); an operation that takes no input cannot be broken.
MODES = ("positive", "negative")
OPERATIONS = [
    pytest.param(path, method.upper(), mode, id=f"{method.upper()} {path} {mode}")
    for path, item in DOCUMENT["paths"].items()
    for method, operation in item.items()
    for mode in MODES
    if mode == "positive"
    or operation.get("parameters")
    or operation.get("requestBody")
    or operation.get("security")
]
_turns = itertools.count()


def _new_session(http: httpx.Client) -> dict[str, Any]:
    body = {"order_id": "fuzz", "amount": 100, "currency": "EUR"}
    reply = http.post("/api/sessions", json=body, headers=merchant())
    assert reply.status_code == 201, reply.text
    return reply.json()


def _credentials(case: Any, http: httpx.Client) -> dict[str, str]:
    """Each case gets one of the API key, a client secret and the admin token; on a
    session's path, most cases name a real session (random ids would only be 404)."""
    turn = next(_turns)
    token = (API_KEY, "client secret", ADMIN_TOKEN)[turn % 3]
    if "session_id" in (case.path_parameters or {}) and turn % 4 != 3:
        session = _new_session(http)
        case.path_parameters["session_id"] = session["id"]
        if token == "client secret":
            token = session["client_secret"]
    elif token == "client secret":
        token = _new_session(http)["client_secret"]
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path, method, mode", OPERATIONS)
def test_the_server_keeps_to_its_description(
    schema: Any, server: Server, plain_http: httpx.Client, path: str, method: str, mode: str
) -> None:
    """Positive cases follow the description, negative ones break it on purpose: either
    way no server error, every answer as described, every status documented."""
    from hypothesis import HealthCheck, given, settings
    from schemathesis import GenerationMode
    from schemathesis.checks import (
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
    )

    @given(case=schema[path][method].as_strategy(generation_mode=GenerationMode(mode)))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case: Any) -> None:
        headers = _credentials(case, plain_http)
        kwargs: dict[str, Any] = {}
        if case.path == "/webhooks/sandbox" and isinstance(case.body, dict):
            # Signed, so that the body reaches the parser rather than stop at the signature.
            raw = json.dumps(case.body).encode()
            headers = {"Content-Type": "application/json"}
            headers["Paylive-Signature"] = signature_header(WEBHOOK_SECRET, int(time.time()), raw)
            kwargs["data"] = raw
        case.call_and_validate(
            base_url=server.url,
            headers=headers,
            checks=[not_a_server_error, response_schema_conformance, status_code_conformance],
            **kwargs,
        )

    call()


def _documents(path: str, method: str, status: int) -> bool:
    return str(status) in DOCUMENT["paths"][path][method]["responses"]


def test_an_optional_body_refused_for_its_field_is_a_documented_status(
    plain_http: httpx.Client,
) -> None:
    """A route whose body is optional still reads it strictly (section 3.1: ``NaN`` and
    lone surrogates are 422 ``invalid_field``): the description must list that 422,
    which the fuzzer's few examples rarely reach."""
    session = _new_session(plain_http)
    headers = {
        "Authorization": f"Bearer {session['client_secret']}",
        "Content-Type": "application/json",
    }
    for path, url in (
        ("/api/sessions/{session_id}/check", f"/api/sessions/{session['id']}/check"),
        ("/api/tickets", "/api/tickets"),
    ):
        reply = plain_http.post(url, content=b'{"a": NaN}', headers=headers)
        assert reply.status_code == 422, reply.text
        assert reply.json()["error"]["code"] == "invalid_field"
        assert _documents(path, "post", 422), path


def test_check_may_answer_a_conflict_and_the_description_says_so() -> None:
    """``check`` applies the provider's word through the same compare-and-set as every
    command, which answers 409 ``conflict`` when the session changed too often
    (section 3.1)."""
    assert _documents("/api/sessions/{session_id}/check", "post", 409)
