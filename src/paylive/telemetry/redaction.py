"""Redaction of tokens and secrets in text that leaves the process: log lines
(``server.logs``), and span attributes, statuses and recorded exceptions (``tracing``).
A URL keeps its scheme, user and host, and loses its password (``redis://:***@host``).
Here, below both, so that a span set by any layer is redacted as a log line is.

A query key is compared once decoded, as the app reads it: ``?%74oken=`` and
``?t%6Fken=`` are ``token`` to Starlette, so they are to the redactor too.
"""

from __future__ import annotations

import re
from urllib.parse import unquote_plus

# key=value in a query string (or a form body); the key as sent, percent-encoded or not.
_QUERY_PAIR = re.compile(r"(?P<lead>[?&;\s])(?P<key>[^=&;\s\"'#?]+)=(?P<value>[^&;\s\"'#]*)")
# A ticket opens a stream for a minute (web/tickets.py): short-lived, still a credential.
_SECRET_KEYS = frozenset({"token", "secret", "client_secret", "api_key", "access_token", "ticket"})
# A %-placeholder of a log format string ("Bearer %s"): the token is in the arguments,
# and the line is redacted again once formatted (``RedactTokens``).
_PLACEHOLDER = r"%(?:\([^)]*\))?[-#0 +]*[0-9*]*(?:\.[0-9*]+)?[diouxXeEfFgGcrsa%]"
_PATTERNS = (
    # A URL's password (redis://:pw@host, postgresql://user:pw@db), which a driver's
    # connection error or a logged URL carries. The scheme, user and host stay, so the
    # line still says what was reached. ``***`` as ``paylive check`` shows one: a
    # ``[redacted]`` there would read as an IPv6 host to a URL parser (urlsplit raises).
    # The password runs to the authority's last @: one with an unescaped @ is all gone.
    (re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:\"']*:)[^\s/?#\"']*@"), r"\1***@"),
    (re.compile(rf"(Bearer\s+)(?!{_PLACEHOLDER})[^\s\"',]+", re.IGNORECASE), r"\1[redacted]"),
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


# Every pattern above needs one of these in the text: a line without any (most access
# lines) is returned as it is, after one search instead of five substitutions. The
# access log was a seventh of a worker's CPU under load, most of it redacting.
_SUSPECT = re.compile(r"=|@|bearer|secret|sk_|rk_|whsec_", re.IGNORECASE)


def redact(text: str) -> str:
    if not _SUSPECT.search(text):
        return text
    text = _QUERY_PAIR.sub(_redact_pair, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text
