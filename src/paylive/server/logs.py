"""Logging that never writes a token: URLs lose their ``token`` (and stream
``ticket``) values and their password, headers their bearer values, before any handler
sees the record (the access log included).

What is redacted, and how, is ``telemetry.redaction``'s: spans are redacted the same way.

Lines are text for a terminal, or with ``PAYLIVE_LOG_FORMAT=json`` one JSON object
each: time, level, logger, event (the message), worker (the process id), and the
request id, session id and trace and span ids of the work that wrote it
(``telemetry.context``), when there are any. The access log's lines also carry the
method, path, status and client address as fields.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

from ..telemetry import context
from ..telemetry.redaction import redact


def _redact_arg(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


_TRACEBACKS = logging.Formatter()


class RedactTokens(logging.Filter):
    """Redacts the format string and each argument; then, when a secret shows only
    once they are put together (``"Bearer %s"`` and the token as its argument), the
    record becomes its redacted line with no arguments left.

    The arguments stay apart otherwise: the access log's formatters read them as
    fields (client, method, path, version, status)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        # An exception's message is often the caller's text (a URL, a header). A
        # formatter writes the traceback from ``exc_text`` when it is set, so setting
        # it redacted here keeps the secret out of the text format as out of JSON's.
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(_TRACEBACKS.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        if record.args and isinstance(record.msg, str):
            try:
                line = record.getMessage()
            except (TypeError, ValueError, KeyError):
                return True  # logging reports a bad format string itself
            cleaned = redact(line)
            if cleaned != line:
                record.msg, record.args = cleaned, ()
        return True


def _time(record: logging.LogRecord) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
    return f"{seconds}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object a line (the record's message already redacted by the filter)."""

    def line(self, record: logging.LogRecord) -> dict[str, Any]:
        out: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
            "worker": os.getpid(),
        }
        # Both come from the client (a header, a path): a page that puts its client
        # secret where the session id goes must not have it written here.
        request = context.request_id.get()
        if request is not None:
            out["request_id"] = redact(request)
        session = context.session_id.get()
        if session is not None:
            out["session_id"] = redact(session)
        trace = context.trace.get()
        if trace is not None:
            out["trace_id"] = trace.trace_id
            out["span_id"] = trace.span_id
        if record.exc_info:
            out["error"] = redact(self.formatException(record.exc_info))
        return out

    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.line(record), separators=(",", ":"), default=str)


class JsonAccessFormatter(JsonFormatter):
    """uvicorn's access line: ``(client, method, path, http version, status)``."""

    def line(self, record: logging.LogRecord) -> dict[str, Any]:
        out = super().line(record)
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, version, status = args
            out.update(
                event="http.request",
                client=client,
                method=method,
                path=path,
                http_version=version,
                status=status,
            )
        return out


def announce(text: str, log_format: str, level: str = "info") -> str:
    """What ``paylive serve`` prints before logging starts (its banner, a warning): as
    is, or one JSON line per line of it, so that a JSON log has nothing else."""
    if log_format != "json":
        return text
    now = time.time()
    stamp = f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(now))}.{int(now % 1 * 1000):03d}Z"
    return "\n".join(
        json.dumps(
            {
                "time": stamp,
                "level": level,
                "logger": "paylive",
                "event": line.strip(),
                "worker": os.getpid(),
            },
            separators=(",", ":"),
        )
        for line in text.splitlines()
        if line.strip()
    )


def log_config(level: str = "info", log_format: str = "text") -> dict[str, Any]:
    """uvicorn's log config with the redacting filter on every handler."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    formatters: dict[str, Any] = {
        "default": {"format": fmt},
        "access": {
            "()": "uvicorn.logging.AccessFormatter",
            "fmt": '%(asctime)s %(levelname)s access: %(client_addr)s "%(request_line)s" %(status_code)s',
        },
    }
    if log_format == "json":
        formatters = {
            "default": {"()": "paylive.server.logs.JsonFormatter"},
            "access": {"()": "paylive.server.logs.JsonAccessFormatter"},
        }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "paylive.server.logs.RedactTokens"}},
        "formatters": formatters,
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["redact"],
                "stream": "ext://sys.stderr",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "access",
                "filters": ["redact"],
                "stream": "ext://sys.stdout",
            },
        },
        "loggers": {
            "uvicorn": {"handlers": ["default"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["access"], "level": level.upper(), "propagate": False},
            "paylive": {"handlers": ["default"], "level": level.upper(), "propagate": False},
        },
    }
