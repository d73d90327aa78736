"""Request ids, trace context, spans and JSON log lines, in process: spans recorded by
the OpenTelemetry SDK's in-memory exporter around a real service (memory engine, a
scripted provider), and paylive without OpenTelemetry in a fresh interpreter."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from uvicorn.logging import AccessFormatter

from paylive.core.machine import Cancel, ProviderResult, StartAttempt
from paylive.server.logs import JsonAccessFormatter, JsonFormatter, RedactTokens, log_config
from paylive.service.payments import PaymentService
from paylive.settings import SettingsError, load_settings
from paylive.telemetry import context, redaction, tracing
from paylive.telemetry.context import TraceContext

from .test_service import CARD, Clock, ScriptedGateway, run_effects
from .test_service import parts as parts  # noqa: F401 - the fixture

pytestmark = pytest.mark.anyio

CALLER = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing.use(provider)
    try:
        yield memory
    finally:
        tracing.use(None)


def trace_of(span: ReadableSpan) -> str:
    assert span.context is not None
    return f"{span.context.trace_id:032x}"


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


# Ids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, parsed",
    [
        (CALLER.traceparent, CALLER),
        (
            f"00-{CALLER.trace_id}-{CALLER.span_id}-00",
            TraceContext(*CALLER.traceparent.split("-")[1:3], False),
        ),  # fmt: skip
        (f"00-{'0' * 32}-{CALLER.span_id}-01", None),  # an all-zero trace id is invalid
        (f"00-{CALLER.trace_id}-{'0' * 16}-01", None),
        (f"ff-{CALLER.trace_id}-{CALLER.span_id}-01", None),  # version ff is forbidden
        (f"00-{CALLER.trace_id.upper()}-{CALLER.span_id}-01", None),
        (f"00-{CALLER.trace_id}-{CALLER.span_id}-01-extra", None),
        ("", None),
        (None, None),
        ("garbage", None),
    ],
)
def test_traceparent_is_parsed_as_w3c_says(header: str | None, parsed: object) -> None:
    assert context.parse_traceparent(header) == parsed


def test_a_request_id_is_kept_when_sensible_and_replaced_otherwise() -> None:
    assert context.accepted_request_id("req-1:a/b+c=d@e.f_g") == "req-1:a/b+c=d@e.f_g"
    for bad in (None, "", "has space", "x" * 129, "tab\t", "é"):
        made = context.accepted_request_id(bad)
        assert made != bad and len(made) == 16 and int(made, 16) >= 0


def test_without_opentelemetry_spans_still_make_and_carry_trace_ids() -> None:
    assert not tracing.enabled()
    with tracing.span("outer", parent=CALLER):
        outer = context.trace.get()
        assert outer is not None and outer.trace_id == CALLER.trace_id
        assert outer.span_id != CALLER.span_id
        with tracing.span("inner"):
            inner = context.trace.get()
            assert inner is not None and inner.trace_id == CALLER.trace_id
            assert inner.span_id != outer.span_id
        assert context.trace.get() == outer
    assert context.trace.get() is None
    with tracing.span("root"):
        root = context.trace.get()
        assert root is not None and root.trace_id != CALLER.trace_id


# Spans around the service -----------------------------------------------------------------


async def test_a_command_its_provider_call_and_its_outbox_are_one_trace(
    parts: tuple[PaymentService, ScriptedGateway, Clock], exporter: InMemorySpanExporter
) -> None:
    service, gateway, clock = parts
    session = await service.create("o", 100, "EUR", {})
    with tracing.span("POST /api/sessions/{session_id}/attempts", kind="server", parent=CALLER):
        await service.run(session.id, StartAttempt(CARD))
    # The customer cancels (another request, another trace), then the provider's late
    # success arrives: the refund it needs is decided under the webhook's trace ...
    with tracing.span("POST /api/sessions/{session_id}/cancel", kind="server"):
        await service.run(session.id, Cancel())
    webhook = TraceContext("a" * 32, "b" * 16)
    with tracing.span("webhook in", parent=webhook):
        await service.run(session.id, ProviderResult(1, "succeeded"))
    # ... and the effect loop, which has no trace of its own, continues it.
    assert context.trace.get() is None
    assert await run_effects(service, clock) == [session.id]
    assert gateway.refunds

    spans = exporter.get_finished_spans()
    [command] = named(spans, "POST /api/sessions/{session_id}/attempts")
    [charge] = named(spans, "provider charge")
    assert trace_of(command) == trace_of(charge) == CALLER.trace_id
    assert charge.parent is not None and command.context is not None
    assert charge.parent.span_id == command.context.span_id
    assert command.parent is not None and f"{command.parent.span_id:016x}" == CALLER.span_id
    assert charge.attributes is not None
    assert charge.attributes["paylive.session_id"] == session.id
    assert charge.attributes["paylive.idempotency_key"] == f"{session.id}:1"

    [outbox] = named(spans, "outbox refund")
    [refund] = named(spans, "provider refund")
    assert trace_of(outbox) == trace_of(refund) == webhook.trace_id
    assert outbox.attributes is not None and outbox.attributes["paylive.session_id"] == session.id
    assert refund.parent is not None and outbox.context is not None
    assert refund.parent.span_id == outbox.context.span_id
    # The session's record carries the trace it was last saved under.
    stored = await service.get(session.id)
    parsed = context.parse_traceparent(stored.trace)
    assert parsed is not None and parsed.trace_id == webhook.trace_id


async def test_a_timer_continues_the_trace_of_the_session(
    parts: tuple[PaymentService, ScriptedGateway, Clock], exporter: InMemorySpanExporter
) -> None:
    service, _, clock = parts
    session = await service.create("o", 100, "EUR", {})
    with tracing.span("socket pay", kind="server", parent=CALLER):
        await service.run(session.id, StartAttempt(CARD))
    clock.now += 1000
    await service.tick(session.id)  # the attempt times out, on whichever worker
    [timer] = named(exporter.get_finished_spans(), "paylive Tick")
    assert trace_of(timer) == CALLER.trace_id
    assert timer.attributes is not None and timer.attributes["paylive.session_id"] == session.id
    assert (await service.get(session.id)).status == "interrupted"


async def test_a_failed_provider_call_is_a_failed_span(
    parts: tuple[PaymentService, ScriptedGateway, Clock], exporter: InMemorySpanExporter
) -> None:
    service, gateway, _ = parts
    session = await service.create("o", 100, "EUR", {})
    gateway.charge_fails = True
    await service.run(session.id, StartAttempt(CARD))
    [charge] = named(exporter.get_finished_spans(), "provider charge")
    assert charge.status.status_code.name == "ERROR"
    assert charge.events and charge.events[0].name == "exception"


def test_an_exception_leaves_on_its_span_redacted(exporter: InMemorySpanExporter) -> None:
    """An exception's message is often the caller's text (a URL, a header), as in a
    log's traceback: its span event (message and stacktrace, the cause's included) and
    the span's status reach the exporter redacted as the log does."""
    secret = "ps_abc_secret_0123456789abcdef"
    with pytest.raises(ValueError), tracing.span("GET /api/sessions/{id}"):
        try:
            raise KeyError(f"Bearer tok_live_{secret[-12:]}")
        except KeyError as cause:
            raise ValueError(f"no session at /ws/sessions/ps_abc?token={secret}") from cause
    [span] = exporter.get_finished_spans()
    [event] = span.events
    assert event.name == "exception" and event.attributes is not None
    message = event.attributes["exception.message"]
    stacktrace = event.attributes["exception.stacktrace"]
    assert message == "no session at /ws/sessions/ps_abc?token=[redacted]"
    assert isinstance(stacktrace, str) and "ValueError: no session at" in stacktrace
    assert "KeyError: 'Bearer [redacted]'" in stacktrace
    assert event.attributes["exception.type"] == "ValueError"
    exported = repr(dict(event.attributes)) + str(span.status.description)
    assert secret not in exported and secret[-12:] not in exported, exported
    assert span.status.status_code.name == "ERROR"
    assert span.status.description == "ValueError: " + message


# JSON log lines ---------------------------------------------------------------------------


def _record(message: str, *args: object, name: str = "paylive.service") -> logging.LogRecord:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, message, args, None)
    RedactTokens().filter(record)
    return record


def test_a_json_line_carries_the_ids_of_the_work_that_wrote_it() -> None:
    formatter = JsonFormatter()
    plain = json.loads(formatter.format(_record("started")))
    assert set(plain) == {"time", "level", "logger", "event", "worker"}
    assert plain["level"] == "info" and plain["event"] == "started"
    assert plain["time"].endswith("Z") and "T" in plain["time"]
    with context.bound(request="req-9", session="ps_abc"), tracing.span("x", parent=CALLER):
        line = json.loads(formatter.format(_record("charge %s asked", "ps_abc:1")))
        span = context.trace.get()
    assert span is not None
    assert line["event"] == "charge ps_abc:1 asked"
    assert line["request_id"] == "req-9" and line["session_id"] == "ps_abc"
    assert line["trace_id"] == CALLER.trace_id and line["span_id"] == span.span_id


def test_json_lines_keep_tokens_out() -> None:
    secret = "ps_abc_secret_0123456789abcdef"
    access = _record(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "GET",
        f"/ws/sessions/ps_abc?token={secret}",
        "1.1",
        101,
        name="uvicorn.access",
    )
    line = json.loads(JsonAccessFormatter().format(access))
    assert secret not in json.dumps(line)
    assert line["path"] == "/ws/sessions/ps_abc?token=[redacted]"
    assert (line["method"], line["status"], line["event"]) == ("GET", 101, "http.request")
    bearer = json.loads(JsonFormatter().format(_record("sent Bearer abc123 and %s", "sk_live_x1")))
    assert "abc123" not in bearer["event"] and "sk_live_x1" not in bearer["event"]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_traceback_keeps_tokens_out_in_both_formats(log_format: str) -> None:
    """An exception's message is the caller's text (a URL, a header): the handler
    ``paylive serve`` configures writes its traceback redacted, in the text format as
    in JSON."""
    secret = "ps_abc_secret_0123456789abcdef"
    config = log_config("info", log_format)
    made = config["formatters"]["default"]
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(made["format"])
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    handler.addFilter(RedactTokens())
    try:
        raise ValueError(f"no session at /ws/sessions/ps_abc?token={secret}, Bearer {secret}")
    except ValueError:
        record = logging.LogRecord(
            "paylive.web", logging.ERROR, __file__, 1, "a socket failed", (), sys.exc_info()
        )
    handler.handle(record)
    written = out.getvalue()
    assert "ValueError: no session at" in written
    assert secret not in written, written


def test_a_bearer_placeholder_keeps_its_argument_and_the_line_stays_whole() -> None:
    """``"Bearer %s"`` in a format string: the redactor once took the ``%s`` for the
    token, which left an argument without a place (the line failed to format) and
    the token itself unredacted among the arguments."""
    record = _record("calling with Authorization: Bearer %s for %s", "tok_live_9f8e7d", "ps_a")
    event = json.loads(JsonFormatter().format(record))["event"]
    assert event == "calling with Authorization: Bearer [redacted] for ps_a"
    text = logging.Formatter("%(message)s").format(
        _record("header %r then Bearer %(x)s", name="paylive.web")
    )
    assert text == "header %r then Bearer %(x)s"  # no arguments: the template as written


def test_a_stream_ticket_in_a_query_is_redacted_in_the_access_log() -> None:
    ticket = "tk_0123456789abcdefghij"
    access = _record(
        '%s - "%s %s HTTP/%s" %d',
        "127.0.0.1:5000",
        "GET",
        f"/api/sessions/ps_abc/stream?since=3&ticket={ticket}",
        "1.1",
        200,
        name="uvicorn.access",
    )
    line = json.loads(JsonAccessFormatter().format(access))
    assert ticket not in json.dumps(line)
    assert line["path"] == "/api/sessions/ps_abc/stream?since=3&ticket=[redacted]"
    text = AccessFormatter(log_config()["formatters"]["access"]["fmt"]).format(access)
    assert ticket not in text and "ticket=[redacted]" in text


# Credentials inside URLs: a driver's connection error, or a logged URL, names them.
_URLS = [
    ("redis://:hunter2-redis@cache:6379/0", "redis://:***@cache:6379/0"),
    ("rediss://default:hunter2-redis@cache.example:6380", "rediss://default:***@cache.example:6380"),
    ("postgresql://paylive:hunter2-pg@db/paylive", "postgresql://paylive:***@db/paylive"),
    ("postgres://paylive:hunter2-pg@db:5432/paylive?sslmode=require",
     "postgres://paylive:***@db:5432/paylive?sslmode=require"),
    ("https://shop:hunter2-hook@shop.example/hook", "https://shop:***@shop.example/hook"),
    ("unix://:hunter2-sock@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
    ("redis://:p%40ss%3Aword@cache:6379/0", "redis://:***@cache:6379/0"),
    ("redis://:hunter2@redis@cache:6379/0", "redis://:***@cache:6379/0"),  # an unescaped @
]  # fmt: skip


@pytest.mark.parametrize("url, shown", _URLS)
def test_the_password_of_a_url_is_redacted_and_the_rest_kept(url: str, shown: str) -> None:
    assert redaction.redact(url) == shown
    line = f"Error connecting to {url}: Connection refused (attempt 2), retrying"
    assert (
        redaction.redact(line)
        == f"Error connecting to {shown}: Connection refused (attempt 2), retrying"
    )
    quoted = f"could not reach {url!r}; https://shop.example/no-credentials stays"
    assert (
        redaction.redact(quoted)
        == f"could not reach {shown!r}; https://shop.example/no-credentials stays"
    )
    assert redaction.redact(shown) == shown  # redacted once is redacted


def test_a_url_without_a_password_is_left_as_it_is() -> None:
    for text in (
        "redis://cache:6379/0",
        "postgresql://paylive@db/paylive",  # a user and no password
        "mail ops@shop.example about https://shop.example/a@b",  # an @ past the host
        "ps_abc@worker-2:8000",
    ):
        assert redaction.redact(text) == text


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_url_password_never_reaches_a_log_line(log_format: str) -> None:
    """The handlers ``paylive serve`` configures (``log_config``), in a process of
    their own: a URL as an argument, in the message itself and in a traceback."""
    probe = textwrap.dedent(
        """
        import logging, logging.config, sys
        from paylive.server.logs import log_config

        logging.config.dictConfig(log_config("info", sys.argv[1]))
        log = logging.getLogger("paylive.archive")
        log.warning("archive at %s unreachable, retrying", "postgresql://paylive:hunter2-pg@db/paylive")
        log.warning("webhook to https://shop:hunter2-hook@shop.example/hook failed")
        try:
            raise ConnectionError("Error connecting to redis://:hunter2-redis@cache:6379/0")
        except ConnectionError:
            log.exception("the subscription failed")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, log_format], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    written = done.stderr
    assert "hunter2" not in written, written
    assert "postgresql://paylive:***@db/paylive" in written, written
    assert "https://shop:***@shop.example/hook" in written, written
    assert "redis://:***@cache:6379/0" in written, written
    lines = written.splitlines()
    if log_format == "json":
        parsed = [json.loads(line) for line in lines]
        assert [p["event"] for p in parsed] == [
            "archive at postgresql://paylive:***@db/paylive unreachable, retrying",
            "webhook to https://shop:***@shop.example/hook failed",
            "the subscription failed",
        ]
        assert (
            "ConnectionError: Error connecting to redis://:***@cache:6379/0" in parsed[2]["error"]
        )
    else:
        assert "ConnectionError: Error connecting to redis://:***@cache:6379/0" in written


def test_a_url_password_never_reaches_a_span(exporter: InMemorySpanExporter) -> None:
    url = "postgresql://paylive:hunter2-pg@db/paylive"
    with pytest.raises(OSError), tracing.span("archive follow") as span:
        span.set("db.connection_string", url)
        raise OSError(f"connection to {url} refused")
    [done] = exporter.get_finished_spans()
    [event] = done.events
    exported = repr(dict(done.attributes or {})) + repr(dict(event.attributes or {}))
    exported += str(done.status.description)
    assert "hunter2" not in exported, exported
    assert done.attributes is not None
    assert done.attributes["db.connection_string"] == "postgresql://paylive:***@db/paylive"


# Without OpenTelemetry --------------------------------------------------------------------


def test_paylive_runs_without_opentelemetry_installed() -> None:
    """A fresh interpreter where ``opentelemetry`` cannot be imported: the app serves a
    payment with its ids, and asking for an exporter names the variable to fix."""
    probe = textwrap.dedent(
        """
        import sys
        sys.modules["opentelemetry"] = None  # as if the extra were not installed
        from starlette.testclient import TestClient
        from paylive.server.app import create_app
        from paylive.settings import SettingsError, load_settings

        try:
            load_settings({"PAYLIVE_OTEL_EXPORTER": "file", "PAYLIVE_OTEL_FILE": "/tmp/x"})
        except SettingsError as exc:
            print("refused:", exc)
        key = "k" * 16
        env = {"PAYLIVE_API_KEY": key, "PAYLIVE_SANDBOX_WEBHOOK_URL": "http://127.0.0.1:9/none"}
        app = create_app(load_settings(env))
        with TestClient(app) as client:
            auth = {"Authorization": "Bearer " + key, "X-Request-Id": "probe-1"}
            made = client.post(
                "/api/sessions",
                json={"order_id": "o", "amount": 100, "currency": "EUR"},
                headers=auth,
            )
            paid = client.post(
                "/api/sessions/" + made.json()["id"] + "/attempts",
                json={"payment_method": {"card": "4242424242424242"}},
                headers=auth,
            )
            print("status:", made.status_code, paid.status_code)
            print("request id:", paid.headers["x-request-id"])
            print("traceparent:", paid.headers["traceparent"])
        print("loaded:", sorted(m for m, v in sys.modules.items() if m.startswith("opentelemetry") and v is not None))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "refused: PAYLIVE_OTEL_EXPORTER=file needs OpenTelemetry" in out, out
    assert "status: 201 202" in out
    assert "request id: probe-1" in out
    assert context.parse_traceparent(out.split("traceparent: ")[1].split()[0]) is not None
    assert "loaded: []" in out


def test_an_exporter_without_its_file_is_refused() -> None:
    with pytest.raises(SettingsError, match="PAYLIVE_OTEL_FILE"):
        load_settings({"PAYLIVE_OTEL_EXPORTER": "file"})
    with pytest.raises(SettingsError, match="PAYLIVE_OTEL_EXPORTER"):
        load_settings({"PAYLIVE_OTEL_EXPORTER": "jaeger"})
    with pytest.raises(SettingsError, match="PAYLIVE_LOG_FORMAT"):
        load_settings({"PAYLIVE_LOG_FORMAT": "xml"})
    with pytest.raises(SettingsError, match="PAYLIVE_METRICS_TOKEN"):
        load_settings({"PAYLIVE_METRICS_TOKEN": "short"})
    assert load_settings({"PAYLIVE_LOG_FORMAT": "JSON"}).log_format == "json"


def test_a_stripe_event_names_the_trace_of_its_charge() -> None:
    from paylive.gateway.stripe import TRACE_META, event_trace

    intent = {"id": "pi_1", "metadata": {TRACE_META: CALLER.traceparent}}
    assert event_trace({"data": {"object": intent}}) == CALLER.traceparent
    assert event_trace({"data": {"object": {"id": "pi_1", "metadata": {}}}}) is None
    assert event_trace({"data": "not an object"}) is None
    assert event_trace({"data": {"object": {"metadata": {TRACE_META: 7}}}}) is None


class _StripeLike(BaseHTTPRequestHandler):
    """Two of Stripe's answers, each with the Request-Id header Stripe sends."""

    def do_POST(self) -> None:  # noqa: N802 - the handler's name
        self.rfile.read(int(self.headers.get("content-length", "0")))
        confirm = self.path.endswith("/confirm")
        body = json.dumps(
            {
                "id": "pi_traced",
                "object": "payment_intent",
                "status": "requires_capture" if confirm else "requires_confirmation",
                "metadata": {},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Request-Id", "req_confirm" if confirm else "req_create")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


# stripe's httpx client posts its form with data=, which this httpx deprecates.
@pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning")
async def test_a_stripe_call_names_stripes_request_id_on_its_span(
    exporter: InMemorySpanExporter,
) -> None:
    from paylive.core.decision import Charge
    from paylive.gateway.stripe import PROVIDER_REQUEST_ID, StripeGateway

    stripe_like = ThreadingHTTPServer(("127.0.0.1", 0), _StripeLike)
    threading.Thread(target=stripe_like.serve_forever, daemon=True).start()
    settings = load_settings(
        {
            "PAYLIVE_GATEWAY": "stripe",
            "PAYLIVE_STRIPE_SECRET_KEY": "sk_test_traced",
            "PAYLIVE_STRIPE_WEBHOOK_SECRET": "whsec_traced_0123456789abcdef",
            "PAYLIVE_STRIPE_API_BASE": f"http://127.0.0.1:{stripe_like.server_address[1]}",
        }
    )
    gateway = StripeGateway(settings.stripe)

    async def remember(ref: str) -> bool:
        return True

    charge = Charge(1, "ps_traced:1", {"stripe": "pm_card_visa"}, 100, "EUR")
    try:
        with tracing.span("provider create", kind="client"):
            answer = await gateway.charge(charge, remember)
    finally:
        await gateway.close()
        stripe_like.shutdown()
        stripe_like.server_close()
    assert isinstance(answer, ProviderResult) and answer.outcome == "authorized"
    [span] = named(exporter.get_finished_spans(), "provider create")
    assert span.attributes is not None
    # The last call made under the span (the confirm) names its request.
    assert span.attributes[PROVIDER_REQUEST_ID] == "req_confirm"


# Fragments a log line is made of, secrets among them, in any case and order.
_FRAGMENTS = [
    " ", "/", "?", "&", "=", "%5f", "_", "Bearer ", "bearer\t", "token", "ticket",
    "secret", "SECRET", "ps_abc", "pi_123", "sk_live", "rk_test", "whsec_x", "abc",
    "GET /api/sessions/ps_abc", "HTTP/1.1", "200", "client_secret", "api_key",
    "redis://", "https://", ":", "@", "pw", "user", "'",
]  # fmt: skip


@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join))
def test_a_line_redact_skips_holds_no_secret(text: str) -> None:
    """``redact`` returns a line untouched after one search when none of its markers
    is in it: no pattern it would have applied may match such a line."""
    if redaction._SUSPECT.search(text) is None:
        assert redaction._QUERY_PAIR.search(text) is None
        for pattern, _ in redaction._PATTERNS:
            assert pattern.search(text) is None, (pattern.pattern, text)
    assert redaction.redact(text) == redaction.redact(redaction.redact(text))


async def test_span_names_are_bounded_whatever_method_is_sent(
    exporter: InMemorySpanExporter,
) -> None:
    """A request's span is named ``<METHOD> <route>``, and the method was the client's
    own: a thousand invented methods were a thousand span names, which a tracing
    backend keeps as a list of operations. As in the metric's label, a method not
    among the usual seven is ``other`` (kept whole in ``http.request.method_original``)."""
    from paylive.web.observe import Observe

    async def not_found(scope: object, receive: object, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    observed = Observe(not_found)
    for n in range(1_000):
        scope = {"type": "http", "method": f"M{n}", "path": f"/x/{n}", "headers": []}
        await observed(scope, receive, send)
    await observed({"type": "http", "method": "GET", "path": "/", "headers": []}, receive, send)
    spans = exporter.get_finished_spans()
    assert {s.name for s in spans} == {"other unmatched", "GET unmatched"}
    assert spans[0].attributes is not None
    assert spans[0].attributes["http.request.method_original"] == "M0"
