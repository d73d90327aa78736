"""``Idempotency-Key`` for POST /api/sessions and POST .../attempts (24 h).

The first request with a key takes a short lock record; it is replaced by the
response when the request finishes. The same key and body replay that response,
another body is 422 ``idempotency_key_reused``, a second request while the first
runs is 409 ``idempotency_key_in_use``. Server errors (5xx) release the key so the
client may try again; any other answer is final, as it would be without a key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from ..engine import RecordStore
from ..errors import ApiError

LOCK_TTL_MS = 60_000
Handler = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]


def fingerprint(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_key(key: str) -> None:
    if not 1 <= len(key) <= 255 or not key.isprintable():
        raise ApiError(
            422, "invalid_field", "Idempotency-Key: must be 1 to 255 printable characters"
        )


async def run_once(
    engine: RecordStore,
    scope: str,
    key: str | None,
    body: dict[str, Any],
    ttl_ms: int,
    handler: Handler,
) -> tuple[int, dict[str, Any]]:
    if key is None:
        return await handler()
    check_key(key)
    record_key = "idem:" + hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
    fp = fingerprint(body)
    lock = json.dumps({"state": "running", "fp": fp}).encode()
    held = await engine.put_if_absent(record_key, lock, LOCK_TTL_MS)
    if held is not None:
        record = json.loads(held)
        if record["fp"] != fp:
            raise ApiError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with another request body",
            )
        if record["state"] == "running":
            raise ApiError(
                409, "idempotency_key_in_use", "a request with this Idempotency-Key is running"
            )
        return int(record["status"]), record["body"]
    try:
        status, payload = await handler()
    except ApiError as exc:
        if exc.status >= 500:
            await engine.delete(record_key)
        else:
            await _store(engine, record_key, fp, exc.status, exc.to_body(), ttl_ms)
        raise
    except BaseException:
        await engine.delete(record_key)
        raise
    await _store(engine, record_key, fp, status, payload, ttl_ms)
    return status, payload


async def _store(
    engine: RecordStore, key: str, fp: str, status: int, body: dict[str, Any], ttl_ms: int
) -> None:
    done = {"state": "done", "fp": fp, "status": status, "body": body}
    await engine.put(key, json.dumps(done).encode(), ttl_ms)
