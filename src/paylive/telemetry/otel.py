"""OpenTelemetry, imported only when ``PAYLIVE_OTEL_EXPORTER`` turns it on (the ``otel``
extra): the worker's tracer provider and its exporter.

- ``otlp``: the SDK's OTLP/HTTP exporter, configured by the standard ``OTEL_EXPORTER_OTLP_*``
  variables, behind a batch processor (``OTEL_BSP_*``).
- ``file``: one JSON object a line per finished span, appended to ``PAYLIVE_OTEL_FILE``
  by every worker, as each span ends; for a look without a collector, and for tests.

The resource is the SDK's (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``), with
``service.name`` paylive unless set and the worker's process id.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from .context import TraceContext

if TYPE_CHECKING:
    from ..settings import TelemetrySettings

_KINDS = {
    "internal": SpanKind.INTERNAL,
    "server": SpanKind.SERVER,
    "client": SpanKind.CLIENT,
    "consumer": SpanKind.CONSUMER,
    "producer": SpanKind.PRODUCER,
}


class JsonLinesExporter(SpanExporter):
    """Finished spans as JSON lines appended to a file (one ``write`` per batch, so the
    lines of several workers do not interleave)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = "".join(
            json.dumps(span_record(span), separators=(",", ":")) + "\n" for span in spans
        )
        with self._lock, open(self._path, "a", encoding="utf-8") as out:
            out.write(lines)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def span_record(span: ReadableSpan) -> dict[str, Any]:
    ids = span.get_span_context()
    assert ids is not None
    return {
        "name": span.name,
        "kind": span.kind.name.lower(),
        "trace_id": f"{ids.trace_id:032x}",
        "span_id": f"{ids.span_id:016x}",
        "parent_span_id": None if span.parent is None else f"{span.parent.span_id:016x}",
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "status": span.status.status_code.name.lower(),
        "attributes": dict(span.attributes or {}),
        "pid": os.getpid(),
    }


def provider_for(settings: TelemetrySettings) -> TracerProvider:
    resource = Resource.create({"service.instance.id": str(os.getpid())})
    name = resource.attributes.get("service.name")
    if not isinstance(name, str) or name.startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": "paylive"}))
    provider = TracerProvider(resource=resource)
    if settings.otel_exporter == "file":
        assert settings.otel_file
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(settings.otel_file)))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def start(tracer: trace.Tracer, name: str, kind: str, parent: TraceContext | None) -> trace.Span:
    """A started span under ``parent`` (a new trace without one)."""
    if parent is None:
        ctx = trace.set_span_in_context(trace.INVALID_SPAN)
    else:
        remote = SpanContext(
            int(parent.trace_id, 16),
            int(parent.span_id, 16),
            is_remote=True,
            trace_flags=TraceFlags(TraceFlags.SAMPLED if parent.sampled else TraceFlags.DEFAULT),
        )
        ctx = trace.set_span_in_context(NonRecordingSpan(remote))
    return tracer.start_span(name, context=ctx, kind=_KINDS.get(kind, SpanKind.INTERNAL))
