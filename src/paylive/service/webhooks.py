"""Posting one merchant webhook, signed per Standard Webhooks: the HTTP edge of ``deliveries.py``.

A delivery succeeds on a 2xx answer within the timeout, counted from the first byte
sent to the answer's status and headers; anything else (a refused connection, a 3xx,
4xx or 5xx, a slow answer) is a failure that the outbox retries later. Redirects are
not followed: the shop registers the URL that answers.

The answer's body says nothing paylive acts on: at most ``MAX_ANSWER_BYTES`` of it
are read, within what is left of the timeout, only so that a kept-alive connection
can carry the next post. A 2xx whose body is large or keeps coming was a success
already; waiting for the last byte made it a timeout, posted again and again (and
read a large body whole into memory).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..core import standard_webhooks
from ..telemetry import context

if TYPE_CHECKING:
    import httpx

USER_AGENT = "paylive-webhooks/1"
# Read of an answer's body at most (a shop's "ok" is a few bytes); the rest is dropped
# with its connection.
MAX_ANSWER_BYTES = 65_536


@dataclass(frozen=True)
class Attempt:
    ok: bool
    status: int | None  # the HTTP status, None when no answer came
    error: str | None


class WebhookSender:
    def __init__(self, url: str, secrets: Sequence[str], timeout_s: float) -> None:
        self._url = url
        self._secrets = tuple(secrets)
        self._timeout = timeout_s
        self._client: httpx.AsyncClient | None = None

    async def post(self, body: bytes, message_id: str) -> Attempt:
        """Post ``body``; ``message_id`` (the event id) is its ``webhook-id``."""
        import httpx  # here: a tenth of a server's start-up, and most servers never post

        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            )
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            # Standard Webhooks, signed with every configured secret (rotation).
            **standard_webhooks.headers(self._secrets, message_id, int(time.time()), body),
        }
        traceparent = context.current_traceparent()
        if traceparent is not None:
            headers["traceparent"] = traceparent  # the shop may continue the payment's trace
        status: int | None = None
        try:
            async with asyncio.timeout(self._timeout):
                request = self._client.stream("POST", self._url, content=body, headers=headers)
                async with request as reply:
                    status = reply.status_code
                    read = 0
                    async for chunk in reply.aiter_raw():
                        read += len(chunk)
                        if read > MAX_ANSWER_BYTES:
                            break  # leaving the block closes the connection
        except TimeoutError:
            if status is None:
                return Attempt(False, None, f"no answer within {self._timeout:g} s")
        except Exception as exc:
            # Any post that cannot be made is a failed try, retried and given up as
            # section 6 says: httpx raises more than its HTTPError (an ExceptionGroup
            # from the connection attempts, InvalidURL), and what escaped here was
            # tried again for ever, never recorded, never failed.
            if status is None:
                return Attempt(
                    False, None, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                )
        # Answered: whatever became of the body after the status line.
        if 200 <= status < 300:
            return Attempt(True, status, None)
        return Attempt(False, status, f"HTTP {status}")

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
