"""Operating paylive: JSON logs with request, session and trace ids, OpenTelemetry spans
of one payment across the HTTP command, the provider call and the webhooks, and
/metrics behind its token (issue 21; docs/protocol.md section 1 and 3).

One real server (sandbox gateway, merchant webhooks to a real receiver) with
``PAYLIVE_LOG_FORMAT=json`` and spans exported to a JSON-lines file
(``PAYLIVE_OTEL_EXPORTER=file``); the tests read its log and that file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from ..support.client import Socket, create, merchant, session_url
from ..support.receiver import Receiver
from ..support.redisproc import REDIS_SERVER, start_redis
from ..support.servers import Server
from ..support.waiting import until

pytestmark = pytest.mark.anyio

METRICS_TOKEN = "test-metrics-token-0123456789"
# A Standard Webhooks secret: whsec_ and the base64 of 24 bytes.
SHOP_SECRET = "whsec_" + base64.b64encode(b"shop-webhook-secret-0123").decode()

RECEIVER_SECRET = SHOP_SECRET


def SERVER_ENV(request: pytest.FixtureRequest) -> dict[str, str]:
    receiver: Receiver = request.getfixturevalue("receiver")
    spans_path: Path = request.getfixturevalue("spans_path")
    return {
        "PAYLIVE_LOG_FORMAT": "json",
        "PAYLIVE_OTEL_EXPORTER": "file",
        "PAYLIVE_OTEL_FILE": str(spans_path),
        "PAYLIVE_METRICS_TOKEN": METRICS_TOKEN,
        "PAYLIVE_MERCHANT_WEBHOOK_URL": receiver.url,
        "PAYLIVE_MERCHANT_WEBHOOK_SECRET": SHOP_SECRET,
    }


# A caller's trace: the payment's spans must continue it.
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_PARENT = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def spans_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("otel") / "spans.jsonl"


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of a server's output, each of which must be one JSON object."""
    lines = []
    for number, raw in enumerate(text.splitlines(), 1):
        try:
            line = json.loads(raw)
        except json.JSONDecodeError:
            raise AssertionError(f"line {number} is not JSON: {raw!r}") from None
        assert isinstance(line, dict), raw
        for field in ("time", "level", "event", "worker"):
            assert field in line, f"line {number} has no {field}: {raw}"
        lines.append(line)
    return lines


def log_lines(server: Server) -> list[dict[str, Any]]:
    return json_lines(server.log())


def CHECK_SERVER_LOG(log: str) -> None:
    json_lines(log)  # the module's server's lines, those of its stop too


def spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(raw) for raw in path.read_text().splitlines() if raw.strip()]


async def test_one_payment_is_one_trace_and_its_lines_share_the_request_id(
    server: Server, http: httpx.AsyncClient, spans_path: Path
) -> None:
    session = await create(http, order_id="traced-1")
    session_id = session["id"]
    reply = await http.post(
        f"/api/sessions/{session_id}/attempts",
        json={"payment_method": {"card": "4242424242424242"}},
        headers={
            **merchant(),
            "X-Request-Id": "pay-req-0001",
            "traceparent": f"00-{CALLER_TRACE}-{CALLER_PARENT}-01",
        },
    )
    assert reply.status_code == 202, reply.text
    # Honoured and echoed: the same request id, the caller's trace with our span.
    assert reply.headers["x-request-id"] == "pay-req-0001"
    echoed = reply.headers["traceparent"]
    assert re.fullmatch(rf"00-{CALLER_TRACE}-[0-9a-f]{{16}}-01", echoed), echoed
    assert not echoed.endswith(f"{CALLER_PARENT}-01")

    async def succeeded() -> bool:
        body = (await http.get(f"/api/sessions/{session_id}", headers=merchant())).json()
        return body["status"] == "succeeded"

    await until(succeeded)
    # The merchant's webhook of the outcome is posted by the outbox (any worker).
    await until(lambda: any(s["name"] == "webhook out" for s in spans(spans_path)))

    trace = [s for s in spans(spans_path) if s["trace_id"] == CALLER_TRACE]
    names = {s["name"] for s in trace}
    for wanted in (
        "POST /api/sessions/{session_id}/attempts",  # the HTTP command
        "provider charge",  # the provider call
        "POST /webhooks/sandbox",  # the provider's webhook, as it arrived
        "webhook in",  # ... and as applied
        "webhook out",  # the shop's webhook, from the outbox
    ):
        assert wanted in names, f"{wanted!r} is not in the payment's trace: {sorted(names)}"
    by_id = {s["span_id"]: s for s in trace}
    charge = next(s for s in trace if s["name"] == "provider charge")
    command = by_id[charge["parent_span_id"]]
    assert command["name"] == "POST /api/sessions/{session_id}/attempts"
    assert command["parent_span_id"] == CALLER_PARENT
    for span in (command, charge, next(s for s in trace if s["name"] == "webhook in")):
        assert span["attributes"]["paylive.session_id"] == session_id, span
    assert command["attributes"]["paylive.request_id"] == "pay-req-0001"

    # Each line is written as it happens (the spans too): the access line once the
    # answer is sent, the webhook's as it is applied. The server keeps running for the
    # module's other tests; its whole log, stop included, is checked when it stops.
    def written() -> list[dict[str, Any]] | None:
        text = server.log()
        lines = json_lines(text[: text.rfind("\n") + 1])  # whole lines only
        answered = any(
            line.get("request_id") == "pay-req-0001" and line["event"] == "http.request"
            for line in lines
        )
        applied = any("provider event" in line["event"] for line in lines)
        return lines if answered and applied else None

    lines = await until(written)
    mine = [line for line in lines if line.get("request_id") == "pay-req-0001"]
    access = [line for line in mine if line["event"] == "http.request"]
    assert [(a["method"], a["path"], a["status"]) for a in access] == [
        ("POST", f"/api/sessions/{session_id}/attempts", 202)
    ]
    service = [line for line in mine if line["logger"].startswith("paylive.service")]
    assert any("charge" in line["event"] for line in service), mine
    for line in access + service:
        assert line["trace_id"] == CALLER_TRACE, line
        assert line["session_id"] == session_id, line
    # The webhook's lines, on the provider's request, belong to the same trace.
    applied = [line for line in lines if "provider event" in line["event"]]
    assert applied and all(line["trace_id"] == CALLER_TRACE for line in applied), applied
    assert all(line["session_id"] == session_id for line in applied)


async def test_a_request_id_that_is_not_sensible_is_replaced(http: httpx.AsyncClient) -> None:
    reply = await http.get("/healthz", headers={"X-Request-Id": "a b\tc" + "x" * 200})
    assert reply.status_code == 200
    given = reply.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{16}", given), given
    bad_parent = await http.get("/healthz", headers={"traceparent": "00-" + "0" * 32 + "-1-01"})
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", bad_parent.headers["traceparent"])
    assert "0" * 32 not in bad_parent.headers["traceparent"]


async def test_a_client_secret_sent_as_a_session_id_is_in_no_log_line_nor_span(
    server: Server, http: httpx.AsyncClient, spans_path: Path
) -> None:
    """A page that puts its client secret where the session id goes (``ps_..._secret_...``
    in the path of a request or a socket): the path is the client's, and so is the
    session id read from it; neither carries the secret to the log's fields or a span."""
    session = await create(http, order_id="secret-in-path")
    secret = session["client_secret"]
    mac = secret.rpartition("_secret_")[2]
    reply = await http.get(f"/api/sessions/{secret}", headers={"X-Request-Id": "leaky-0001"})
    assert reply.status_code in (401, 404), reply.text
    with contextlib.suppress(Exception):
        conn = await connect(
            f"{server.ws_url}/ws/sessions/{secret}?token={secret}",
            additional_headers={"X-Request-Id": "leaky-0002"},
            open_timeout=5,
        )
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.recv(), 2)
        await conn.close()

    def written() -> bool:
        return any(
            s["attributes"].get("paylive.request_id") == "leaky-0001" for s in spans(spans_path)
        ) and any(line.get("request_id") == "leaky-0002" for line in log_lines(server))

    await until(written)
    leaks = [line for line in server.log().splitlines() if mac in line]
    assert not leaks, leaks
    leaks = [json.dumps(s) for s in spans(spans_path) if mac in json.dumps(s)]
    assert not leaks, leaks


async def test_metrics_need_their_token(http: httpx.AsyncClient) -> None:
    refused = await http.get("/metrics")
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthorized"
    assert refused.headers["www-authenticate"] == "Bearer"
    wrong = await http.get("/metrics", headers={"Authorization": "Bearer not-the-token-at-all"})
    assert wrong.status_code == 401
    await http.get("/healthz")
    reply = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert reply.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(reply.text)}
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_open_fds"):
        assert name in families, sorted(families)
        assert families[name].samples[0].value > 0
    duration = families["paylive_http_request_duration_seconds"]
    assert duration.type == "histogram"
    health = [
        s for s in duration.samples if s.name.endswith("_count") and s.labels["route"] == "/healthz"
    ]
    assert health and health[0].labels["method"] == "GET" and health[0].value >= 1


DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}
_NAME = re.compile(r"\b((?:paylive|process)_[a-z_]+)\b")
_BY = re.compile(r"\bby \(([^)]*)\)")


async def test_every_dashboard_query_names_a_metric_the_server_exposes(
    http: httpx.AsyncClient,
) -> None:
    reply = await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert reply.status_code == 200
    exposed: dict[str, set[str]] = {}  # a series name: the labels seen on it
    for family in text_string_to_metric_families(reply.text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            exposed.setdefault(family.name + suffix, set())
        for sample in family.samples:
            exposed.setdefault(sample.name, set()).update(sample.labels)
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(queries) >= 15
    for query in queries:
        names = _NAME.findall(query)
        assert names, f"{query!r} names no paylive or process metric"
        for name in names:
            assert name in exposed, f"{query!r}: {name} is not on /metrics"
        seen = set().union(*(exposed[name] for name in names))
        for group in _BY.findall(query):
            for label in (part.strip() for part in group.split(",")):
                # A label only shows once a series has it; those that do must match.
                assert not seen or label in seen | {"le"}, f"{query!r}: no label {label}"
    # And the other way round: the dashboard shows the HTTP, socket and process metrics.
    shown = {name for query in queries for name in _NAME.findall(query)}
    for wanted in (
        "paylive_http_request_duration_seconds_bucket",
        "paylive_socket_command_duration_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ):
        assert wanted in shown


# Two workers on Redis: a socket's payment, its outbox on any worker ----------------------

SOCKET_TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
async def test_a_socket_payment_on_two_workers_is_one_trace(
    tmp_path: Path,
) -> None:
    redis = start_redis(tmp_path / "redis")
    receiver = Receiver(SHOP_SECRET)
    spans_file = tmp_path / "spans.jsonl"
    env = {
        "PAYLIVE_REDIS_URL": redis.url,
        "PAYLIVE_LOG_FORMAT": "json",
        "PAYLIVE_OTEL_EXPORTER": "file",
        "PAYLIVE_OTEL_FILE": str(spans_file),
        "PAYLIVE_METRICS_TOKEN": METRICS_TOKEN,
        "PAYLIVE_MERCHANT_WEBHOOK_URL": receiver.url,
        "PAYLIVE_MERCHANT_WEBHOOK_SECRET": SHOP_SECRET,
    }
    try:
        with Server(env, workers=2) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
                session = await create(http, order_id="traced-socket")
                conn = await connect(
                    session_url(srv.ws_url, session),
                    subprotocols=["paylive.v1.json"],  # type: ignore[list-item]
                    additional_headers={
                        "X-Request-Id": "sock-req-0001",
                        "traceparent": f"00-{SOCKET_TRACE}-{CALLER_PARENT}-01",
                    },
                    open_timeout=5,
                )
                assert conn.response is not None
                assert conn.response.headers["x-request-id"] == "sock-req-0001"
                assert conn.response.headers["traceparent"].startswith(f"00-{SOCKET_TRACE}-")
                sock = Socket(conn)
                await sock.send(
                    {"type": "pay", "payment_method": {"card": "4242424242424242"}, "ref": "p1"}
                )
                await sock.until(lambda m: m["type"] == "ack")
                await sock.state("succeeded")
                await conn.close()

                def shop_got_it() -> bool:
                    return any(
                        s["name"] == "webhook out" and s["trace_id"] == SOCKET_TRACE
                        for s in spans(spans_file)
                    )

                await until(shop_got_it)
                metrics_text = (
                    await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
                ).text
            srv.stop()
            lines = log_lines(srv)
    finally:
        receiver.close()
        redis.stop()

    trace = [s for s in spans(spans_file) if s["trace_id"] == SOCKET_TRACE]
    names = {s["name"] for s in trace}
    for wanted in ("socket pay", "provider charge", "webhook in", "webhook out"):
        assert wanted in names, f"{wanted!r} is not in the trace: {sorted(names)}"
    assert all(
        s["attributes"].get("paylive.session_id") == session["id"]
        for s in trace
        if s["name"] in ("socket pay", "provider charge", "webhook in", "webhook out")
    )
    mine = [line for line in lines if line.get("request_id") == "sock-req-0001"]
    assert any("[accepted]" in line["event"] for line in mine), mine
    charged = [line for line in mine if line["event"].startswith("charge ")]
    assert charged and charged[0]["session_id"] == session["id"]
    assert charged[0]["trace_id"] == SOCKET_TRACE
    posted = [line for line in lines if line["event"].startswith("webhook ")]
    assert posted and all(line["trace_id"] == SOCKET_TRACE for line in posted), posted
    # Each live worker's process metrics, labelled with its process id.
    families = {f.name: f for f in text_string_to_metric_families(metrics_text)}
    workers = {s.labels["worker"] for s in families["process_cpu_seconds"].samples}
    assert len(workers) == 2, workers
    pay = [
        s
        for s in families["paylive_socket_command_duration_seconds"].samples
        if s.name.endswith("_count") and s.labels["type"] == "pay"
    ]
    assert pay and pay[0].value == 1


def _families(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
async def test_a_killed_worker_leaves_nothing_in_the_live_gauges(tmp_path: Path) -> None:
    """A worker killed (OOM, SIGKILL) with a socket open is replaced by the supervisor;
    its socket is gone with it, so the sum is 0 again and its in-flight bound is no
    longer listed: a dead worker's gauges are not added up for ever."""
    redis = start_redis(tmp_path / "redis")
    env = {"PAYLIVE_REDIS_URL": redis.url, "PAYLIVE_METRICS_TOKEN": METRICS_TOKEN}
    auth = {"Authorization": f"Bearer {METRICS_TOKEN}"}
    try:
        with Server(env, workers=2) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:

                async def scrape() -> dict[str, Any]:
                    return _families((await http.get("/metrics", headers=auth)).text)

                def workers(families: dict[str, Any]) -> set[str]:
                    samples = families["process_cpu_seconds"].samples
                    return {s.labels["worker"] for s in samples}

                def sockets(families: dict[str, Any]) -> float:
                    # No family at all once no live worker has written one.
                    family = families.get("paylive_sockets_open")
                    return sum(s.value for s in family.samples) if family else 0

                session = await create(http, order_id="killed-worker")
                conn = await connect(session_url(srv.ws_url, session), open_timeout=5)
                try:
                    await conn.recv()  # the snapshot: the socket is counted by now
                    before = await scrape()
                    assert sockets(before) == 1
                    old = workers(before)
                    assert len(old) == 2, old
                    for pid in old:
                        os.kill(int(pid), signal.SIGKILL)
                finally:
                    await conn.close()

                async def replaced() -> dict[str, Any] | None:
                    try:
                        families = await scrape()
                    except httpx.HTTPError:
                        return None
                    new = workers(families)
                    return families if len(new) == 2 and not new & old else None

                after = await until(replaced, timeout=30)
                assert sockets(after) == 0
                limits = after["paylive_in_flight_limit"].samples
                bounds = {s.labels["pid"] for s in limits}
                assert bounds <= workers(after), bounds
    finally:
        redis.stop()


# OTLP: the standard exporter, to a collector ------------------------------------------------


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:  # noqa: N802 - the handler's name
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.received.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _exported() -> tuple[set[tuple[str, str]], set[str]]:
    """(span name, trace id) of every span the collector received, and the services."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    spans: set[tuple[str, str]] = set()
    services: set[str] = set()
    for path, content_type, body in list(_Collector.received):
        assert path == "/v1/traces" and content_type == "application/x-protobuf"
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
            services.update(
                a.value.string_value
                for a in resource.resource.attributes
                if a.key == "service.name"
            )
            for scope in resource.scope_spans:
                spans.update((span.name, span.trace_id.hex()) for span in scope.spans)
    return spans, services


async def test_spans_go_to_an_otlp_collector() -> None:
    collector = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=collector.serve_forever, daemon=True)
    thread.start()
    env = {
        "PAYLIVE_OTEL_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector.server_address[1]}",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_SERVICE_NAME": "paylive-under-test",
    }
    try:
        with Server(env) as srv:
            async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
                traceparent = (await http.get("/readyz")).headers["traceparent"]
            wanted = ("GET /readyz", traceparent.split("-")[1])
            await until(lambda: wanted in _exported()[0])
    finally:
        collector.shutdown()
        collector.server_close()
    assert _exported()[1] == {"paylive-under-test"}


# Liveness and readiness under overload -----------------------------------------------------


async def test_a_full_worker_is_alive_but_not_ready() -> None:
    """A door of one, held by a command whose provider does not answer (a body still
    on its way holds no place: issue 17): /readyz says overloaded (503), /healthz stays
    200; once the provider deadline ends the command, ready again."""
    # The held place is seen within moments (a /readyz every 50 ms): the deadline that
    # ends the hold leaves a loaded machine ample time to see it, and is waited out.
    env = {"PAYLIVE_MAX_IN_FLIGHT": "1", "PAYLIVE_PROVIDER_DEADLINE_MS": "1500"}
    with Server(env) as srv:
        async with httpx.AsyncClient(base_url=srv.url, timeout=10) as http:
            session = await create(http)
            hangs = {"payment_method": {"card": "4000000000000606"}}  # the charge call hangs
            holding = asyncio.create_task(
                http.post(f"/api/sessions/{session['id']}/attempts", json=hangs, headers=merchant())
            )
            try:

                async def not_ready() -> httpx.Response | None:
                    reply = await http.get("/readyz")
                    return reply if reply.status_code == 503 else None

                refused = await until(not_ready)
                assert refused.json() == {
                    "ready": False,
                    "checks": {
                        "engine": True,
                        "engine_writable": True,
                        "subscription": True,
                        "shutting_down": False,
                        "overloaded": True,
                    },
                }
                assert (await http.get("/healthz")).status_code == 200
                assert (await holding).status_code == 202
                ready = await http.get("/readyz")
                assert ready.status_code == 200 and ready.json()["checks"]["overloaded"] is False
            finally:
                holding.cancel()
