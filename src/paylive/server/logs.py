"""Logging that never writes a token: URLs lose their ``token`` values, headers
their bearer values, before any handler sees the record (the access log included).

A query key is compared once decoded, as the app reads it: ``?%74oken=`` and
``?t%6Fken=`` are ``token`` to Starlette, so they are to the redactor too.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote_plus

# key=value in a query string (or a form body); the key as sent, percent-encoded or not.
_QUERY_PAIR = re.compile(r"(?P<lead>[?&;\s])(?P<key>[^=&;\s\"'#?]+)=(?P<value>[^&;\s\"'#]*)")
_SECRET_KEYS = frozenset({"token", "secret", "client_secret", "api_key", "access_token"})
_PATTERNS = (
    (re.compile(r"(Bearer\s+)[^\s\"',]+", re.IGNORECASE), r"\1[redacted]"),
    (
        re.compile(r"ps_[A-Za-z0-9]+(?:_|%5f)secret(?:_|%5f)[A-Za-z0-9_\-%]+", re.IGNORECASE),
        "[redacted client secret]",
    ),
    # A Stripe PaymentIntent's client secret (the page's, for 3-D Secure) and API keys.
    (re.compile(r"pi_[A-Za-z0-9]+_secret_[A-Za-z0-9]+"), "[redacted payment secret]"),
    (re.compile(r"\b(?:sk|rk|whsec)_[A-Za-z0-9_]+"), "[redacted stripe secret]"),
)


def _redact_pair(match: re.Match[str]) -> str:
    key = unquote_plus(match["key"]).strip().lower()
    if key in _SECRET_KEYS:
        return f"{match['lead']}{match['key']}=[redacted]"
    return match.group(0)


def redact(text: str) -> str:
    text = _QUERY_PAIR.sub(_redact_pair, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_arg(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(a) for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: _redact_arg(v) for k, v in record.args.items()}
        return True


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's log config with the redacting filter on every handler."""
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": "paylive.server.logs.RedactTokens"}},
        "formatters": {
            "default": {"format": fmt},
            "access": {
                "()": "uvicorn.logging.AccessFormatter",
                "fmt": '%(asctime)s %(levelname)s access: %(client_addr)s "%(request_line)s" %(status_code)s',
            },
        },
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
