"""Merchant webhook signatures per Standard Webhooks (docs/protocol.md section 6).

Three headers: ``webhook-id`` (the event id, the same on every retry),
``webhook-timestamp`` (Unix seconds) and ``webhook-signature``: space-separated
``v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<raw body>">``, one per secret while a
secret is rotated. A secret is ``whsec_<base64 of the key>``; the HMAC key is the
decoded bytes. Any Standard Webhooks library (Python, Node, PHP, Ruby, Go, ...)
verifies these; ``verify`` here is paylive's own, for a shop in Python that would
rather not add one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

from .signature import SignatureError

PREFIX = "whsec_"
# The specification asks for keys of 24 to 64 bytes.
MIN_KEY_BYTES = 24
MAX_KEY_BYTES = 64


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_...`` secret; ValueError when it is not one."""
    if not secret.startswith(PREFIX):
        raise ValueError("a Standard Webhooks secret starts with whsec_")
    encoded = secret[len(PREFIX) :]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a Standard Webhooks secret is whsec_ and base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(
            f"a Standard Webhooks secret holds {MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes, "
            f"this one {len(key)}"
        )
    return key


def make_secret(key: bytes) -> str:
    """``whsec_<base64 of key>``: the form a shop stores (the key from a random source)."""
    return PREFIX + base64.b64encode(key).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature."""
    content = f"{message_id}.{timestamp}.".encode() + body
    mac = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def headers(secrets: Sequence[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three headers of one post, signed with every secret (rotation: a receiver
    that knows either the old or the new secret verifies the same request)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(s, message_id, timestamp, body) for s in secrets),
    }


def verify(
    received: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    now_s: int,
    tolerance_s: int = 300,
) -> str:
    """Return the ``webhook-id`` of a genuine webhook; raise SignatureError otherwise.

    ``received`` is the request's headers (any case); ``body`` its raw bytes, unparsed.
    """
    lowered = {name.lower(): value for name, value in received.items()}
    message_id = lowered.get("webhook-id", "")
    raw_timestamp = lowered.get("webhook-timestamp", "")
    signatures = lowered.get("webhook-signature", "")
    if not (message_id and raw_timestamp and signatures):
        raise SignatureError("missing webhook-id, webhook-timestamp or webhook-signature")
    if not (raw_timestamp.isascii() and raw_timestamp.isdigit()) or len(raw_timestamp) > 12:
        raise SignatureError("webhook-timestamp is not a Unix time in seconds")
    timestamp = int(raw_timestamp)
    if abs(now_s - timestamp) > tolerance_s:
        raise SignatureError(f"webhook-timestamp is more than {tolerance_s} s off")
    expected = [sign(secret, message_id, timestamp, body) for secret in secrets]
    matched = False
    # Every pair is compared, so the time taken does not tell which one matched.
    for candidate in signatures.split(" "):
        for value in expected:
            matched |= hmac.compare_digest(candidate.encode(), value.encode())
    if not matched:
        raise SignatureError("no webhook-signature matches")
    return message_id
