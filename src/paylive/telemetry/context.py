"""The ids a log line and a span carry, in context variables.

An HTTP request, a socket and each loop job (a timer, an outbox run) is its own task,
so a value set at its start is seen by everything it calls and by nothing else:
asyncio copies the context into every task it creates.

Trace ids follow W3C Trace Context (``traceparent``), with or without
OpenTelemetry: without it paylive still makes and carries the ids, so the logs of one
payment share a trace id across workers; with it, spans are exported under them.
"""

from __future__ import annotations

import random
import re
from contextvars import ContextVar
from dataclasses import dataclass

# What a caller may send as X-Request-Id: printable ASCII without spaces, short enough
# for a log line. Anything else is replaced by one of ours (never refused).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True)
class TraceContext:
    """A position in a trace: the trace and the span that is current."""

    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    sampled: bool = True

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def parse_traceparent(value: str | None) -> TraceContext | None:
    """A W3C ``traceparent`` header; None when absent or malformed (then a new trace
    starts, as the specification says)."""
    if not value:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    if version == "00" and len(value.strip()) != 55:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))


def new_trace_id() -> str:
    return f"{random.getrandbits(128) or 1:032x}"


def new_span_id() -> str:
    return f"{random.getrandbits(64) or 1:016x}"


def new_request_id() -> str:
    return f"{random.getrandbits(64):016x}"


def accepted_request_id(value: str | None) -> str:
    """The caller's X-Request-Id when it is a sensible one, else a new id."""
    if value and _REQUEST_ID.fullmatch(value):
        return value
    return new_request_id()


request_id: ContextVar[str | None] = ContextVar("paylive_request_id", default=None)
session_id: ContextVar[str | None] = ContextVar("paylive_session_id", default=None)
trace: ContextVar[TraceContext | None] = ContextVar("paylive_trace", default=None)


def current_traceparent() -> str | None:
    current = trace.get()
    return None if current is None else current.traceparent


class bound:  # noqa: N801 - used as a function: ``with context.bound(...)``
    """Set the request id and/or the session id for the block (None leaves one as is).
    A class rather than a generator: it runs on every request."""

    __slots__ = ("_request", "_session", "_tokens")

    def __init__(self, *, request: str | None = None, session: str | None = None) -> None:
        self._request = request
        self._session = session

    def __enter__(self) -> None:
        self._tokens = (
            None if self._request is None else request_id.set(self._request),
            None if self._session is None else session_id.set(self._session),
        )

    def __exit__(self, *exc: object) -> None:
        request, session = self._tokens
        if session is not None:
            session_id.reset(session)
        if request is not None:
            request_id.reset(request)
