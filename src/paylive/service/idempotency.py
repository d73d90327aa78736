"""``Idempotency-Key`` for POST /api/sessions and POST .../attempts (24 h).

The first request with a key takes a short lock record; it is replaced by the
answer when the request finishes. The same key and body replay that answer,
another body is ``idempotency_key_reused``, a second request while the first runs
is ``idempotency_key_in_use``. An answer the handler returns is final, refusals
included (as it would be without a key); an exception (a server error, or a refusal
that only says "not now", which the edge raises rather than returns) releases the key
so that the client may try again and the request then runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ..core.protocol import ErrorCode
from ..engine import EngineUnavailable, RecordStore
from ..errors import Refused

log = logging.getLogger(__name__)

LOCK_TTL_MS = 60_000
# An answer as the edge sends it: (status, body). The service keeps it, never reads it.
Answer = tuple[int, dict[str, Any]]
Handler = Callable[[], Awaitable[Answer]]


def fingerprint(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def request_digest(key: str | None, body: Any) -> str | None:
    """What names a request with ``key`` in the decision it makes (a keyed create names
    its session after it, a refund and an attempt keep it, the session keeps it for a
    cancel, interrupt, seen or complete and for staff's review, done by hand and send
    again): the same key and body, the
    same digest; None without a key. The kept answer lasts 24 h and can be lost (its
    lock left to run out by a worker that died, or let go when the engine's reply to
    the save was lost, or the request cut by a stopping worker); the decision lasts
    with its session."""
    if key is None:
        return None
    return hashlib.sha256(f"{key}\n{fingerprint(body)}".encode()).hexdigest()


def valid_key(key: object) -> bool:
    """An Idempotency-Key as the contract takes it, in a header or a socket frame's
    ``key``: a string of 1 to 255 printable characters."""
    return isinstance(key, str) and 1 <= len(key) <= 255 and key.isprintable()


def check_key(key: str) -> None:
    if not valid_key(key):
        raise Refused(
            ErrorCode.INVALID_FIELD, "Idempotency-Key: must be 1 to 255 printable characters"
        )


class IdempotencyKeys:
    def __init__(self, engine: RecordStore, ttl_ms: int) -> None:
        self.engine = engine
        self.ttl_ms = ttl_ms

    async def run_once(
        self, scope: str, key: str | None, body: dict[str, Any], handler: Handler
    ) -> Answer:
        """``handler``'s answer, or the one kept for ``key`` within ``scope``."""
        if key is None:
            return await handler()
        check_key(key)
        record_key = "idem:" + hashlib.sha256(f"{scope}\n{key}".encode()).hexdigest()
        fp = fingerprint(body)
        lock = json.dumps({"state": "running", "fp": fp}).encode()
        held = await self.engine.put_if_absent(record_key, lock, LOCK_TTL_MS)
        if held is not None:
            record = json.loads(held)
            if record["fp"] != fp:
                raise Refused(
                    ErrorCode.IDEMPOTENCY_KEY_REUSED,
                    "this Idempotency-Key was used with another request body",
                )
            if record["state"] == "running":
                raise Refused(
                    ErrorCode.IDEMPOTENCY_KEY_IN_USE,
                    "a request with this Idempotency-Key is running",
                )
            return int(record["status"]), record["body"]
        try:
            status, payload = await handler()
        except BaseException:
            await self.engine.delete(record_key)
            raise
        done = {"state": "done", "fp": fp, "status": status, "body": payload}
        try:
            await self.engine.put(record_key, json.dumps(done).encode(), self.ttl_ms)
        except EngineUnavailable:
            # The command ran and its change is saved; only keeping its answer failed
            # (or its reply was lost). The answer is the client's all the same: a 503
            # would tell it to send again a command that worked. Sent again, it finds
            # the kept answer, or the lock until it runs out, then what it did
            # (``request_digest``).
            log.warning("the answer for an Idempotency-Key was not kept: the engine failed")
        return status, payload
