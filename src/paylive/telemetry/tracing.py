"""Spans: one for each HTTP command, socket command, provider call, webhook in and out
and outbox effect, tied to the session by the ``paylive.session_id`` attribute.

Without OpenTelemetry (the default, or the ``otel`` extra not installed) a span is
only a new span id under the current trace id in ``context.trace``, so log lines and
the ``traceparent`` carried across workers still name the trace. With it
(``PAYLIVE_OTEL_EXPORTER``), each span is also an OpenTelemetry span, exported; its
ids are the ones the logs show. paylive never imports ``opentelemetry`` unless it is
turned on.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from . import context
from .context import TraceContext
from .redaction import redact

if TYPE_CHECKING:
    from ..settings import TelemetrySettings

SESSION_ATTRIBUTE = "paylive.session_id"
Attribute = str | bool | int | float


class Span:
    """The span of a block: attributes and the error that ended it, when there is one."""

    __slots__ = ("_otel",)

    def __init__(self, otel: Any = None) -> None:
        self._otel = otel

    def set(self, key: str, value: Attribute | None) -> None:
        if self._otel is not None and value is not None:
            self._otel.set_attribute(key, _clean(value))

    def rename(self, name: str) -> None:
        if self._otel is not None:
            self._otel.update_name(name)

    def fail(self, description: str) -> None:
        """Mark the span as failed (an answer that is an error, not an exception)."""
        if self._otel is not None:
            from opentelemetry.trace import Status, StatusCode

            self._otel.set_status(Status(StatusCode.ERROR, redact(description)))


def _clean(value: Attribute) -> Attribute:
    """A span leaves the process as a log line does: a path or a session id read from
    it is the client's, and may hold a token (a client secret where the id goes)."""
    return redact(value) if isinstance(value, str) else value


# The innermost span of the work in progress, for ``annotate``.
_current: ContextVar[Span | None] = ContextVar("paylive_span", default=None)
_tracer: Any = None  # an opentelemetry Tracer once ``install`` or ``use`` ran
_provider: Any = None
_installed = False


def enabled() -> bool:
    return _tracer is not None


def use(provider: Any) -> None:
    """Record spans with ``provider`` (an opentelemetry TracerProvider); None stops."""
    global _tracer, _provider
    _provider = provider
    _tracer = None if provider is None else provider.get_tracer("paylive")


def install(settings: TelemetrySettings) -> None:
    """The worker's exporter, as ``PAYLIVE_OTEL_EXPORTER`` says (off: nothing)."""
    global _installed
    if settings.otel_exporter == "off" or _provider is not None:
        return
    from .otel import provider_for

    use(provider_for(settings))
    _installed = True


def shutdown() -> None:
    """Export what is still buffered and stop (a stopping worker), if ``install`` started
    the exporter (a provider handed to ``use`` is its owner's to stop)."""
    global _installed
    if not _installed:
        return
    _installed = False
    with contextlib.suppress(Exception):
        _provider.shutdown()
    use(None)


_UNTRACED = Span()


class span:  # noqa: N801 - used as a function: ``with tracing.span(...) as s``
    """A span for the block, the child of ``parent`` or else of the current one (a new
    trace when there is neither). An exception escaping the block marks it failed.

    A class rather than a generator: it runs on every request and socket command, and
    without OpenTelemetry it must cost no more than two new ids."""

    __slots__ = ("_name", "_kind", "_parent", "_attributes", "_otel", "_token", "_current")

    def __init__(
        self,
        name: str,
        *,
        kind: str = "internal",
        parent: TraceContext | None = None,
        attributes: Mapping[str, Attribute | None] | None = None,
    ) -> None:
        self._name = name
        self._kind = kind
        self._parent = parent
        self._attributes = attributes
        self._otel: Any = None
        self._current: Any = None

    def __enter__(self) -> Span:
        parent = self._parent or context.trace.get()
        if _tracer is None:
            self._token = context.trace.set(
                TraceContext(
                    parent.trace_id if parent else context.new_trace_id(),
                    context.new_span_id(),
                    parent.sampled if parent else True,
                )
            )
            return _UNTRACED
        from .otel import start

        otel = self._otel = start(_tracer, self._name, self._kind, parent)
        session = context.session_id.get()
        if session is not None:
            otel.set_attribute(SESSION_ATTRIBUTE, _clean(session))
        for key, value in (self._attributes or {}).items():
            if value is not None:
                otel.set_attribute(key, _clean(value))
        made = otel.get_span_context()
        self._token = context.trace.set(
            TraceContext(
                f"{made.trace_id:032x}", f"{made.span_id:016x}", bool(made.trace_flags & 1)
            )
        )
        here = Span(otel)
        self._current = _current.set(here)
        return here

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        context.trace.reset(self._token)
        otel = self._otel
        if otel is None:
            return
        _current.reset(self._current)
        if exc is not None:
            _record_exception(otel, exc)
            Span(otel).fail(f"{type(exc).__name__}: {exc}")
        otel.end()


def _record_exception(otel: Any, exc: BaseException) -> None:
    """``otel.record_exception``, its message and stacktrace redacted: an exception's
    text is often the caller's (a URL with ``?token=``, a header), and leaves the
    process in the span as a logged traceback does (``server.logs``). The SDK's own
    values are replaced by passing them as the event's attributes, which take
    precedence, so the event keeps its name and the semantic conventions' keys."""
    otel.record_exception(
        exc,
        attributes={
            "exception.message": redact(str(exc)),
            "exception.stacktrace": redact("".join(traceback.format_exception(exc))),
        },
    )


def annotate(key: str, value: Attribute | None) -> None:
    """Set an attribute on the innermost span (say, the provider's request id, which
    only the gateway sees)."""
    current = _current.get()
    if current is not None:
        current.set(key, value)


@contextlib.contextmanager
def continued(traceparent: str | None) -> Iterator[None]:
    """Continue the trace a record carries (a session's, a webhook's) for work that has
    none of its own: a timer, the outbox. Work that has one keeps it."""
    carried = context.parse_traceparent(traceparent)
    if carried is None or context.trace.get() is not None:
        yield
        return
    token = context.trace.set(carried)
    try:
        yield
    finally:
        context.trace.reset(token)
