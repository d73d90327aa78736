"""Provider webhook signatures: ``Paylive-Signature: t=<s>,v1=<hex>[,v1=...]``.

What the sandbox provider posts to paylive (docs/protocol.md section 3). Webhooks
paylive posts to the shop are signed per Standard Webhooks instead
(``standard_webhooks.py``, section 6); both raise ``SignatureError``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from ..errors import PayliveError

# A Unix time in seconds has 10 digits until the year 2286; 18 leave room for zeros.
MAX_TIMESTAMP_DIGITS = 18


class SignatureError(PayliveError, ValueError):
    """The webhook is unsigned, badly signed or too old; nothing is applied."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return mac.hexdigest()


def signature_header(secret: str | Sequence[str], timestamp: int, body: bytes) -> str:
    """One ``v1`` per secret: while a secret is rotated, a receiver that knows either
    the old or the new one verifies the same request."""
    secrets = [secret] if isinstance(secret, str) else list(secret)
    return f"t={timestamp}," + ",".join(f"v1={sign(s, timestamp, body)}" for s in secrets)


def verify(
    header: str | None, body: bytes, secrets: Sequence[str], now_s: int, tolerance_s: int
) -> None:
    """Raise SignatureError unless some ``v1`` matches some secret within the tolerance."""
    if not header:
        raise SignatureError("missing Paylive-Signature header")
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t":
            # ASCII digits only: int() also reads "1_000", " 1000" and other scripts'
            # digits, a t= other than the "<t>" the sender signed (docs/protocol.md 3.2).
            if not (value.isascii() and value.isdigit()):
                raise SignatureError("the signature timestamp is not an integer")
            if len(value) > MAX_TIMESTAMP_DIGITS:
                # int() refuses past 4,300 digits with a ValueError of its own, which
                # no caller expects (it answered 500); no time has that many.
                raise SignatureError("the signature timestamp is not a time")
            timestamp = int(value)
        elif name == "v1" and value:
            candidates.append(value.lower())
    if timestamp is None or not candidates:
        raise SignatureError("the signature header needs t= and at least one v1=")
    if abs(now_s - timestamp) > tolerance_s:
        raise SignatureError(f"the signature timestamp is more than {tolerance_s} s off")
    expected = [sign(secret, timestamp, body) for secret in secrets]
    matched = False
    # Compare every pair so the time taken does not depend on which one matches.
    for candidate in candidates:
        for value in expected:
            matched |= hmac.compare_digest(candidate.encode(), value.encode())
    if not matched:
        raise SignatureError("no signature matches")
