"""A shop's webhook receiver, as a real HTTP server the tests start: it verifies each
webhook with the ``standardwebhooks`` library (PyPI), as a shop in any language would
with its own, de-duplicates by event id, keeps the last raw webhooks (for the node
check), and can be told to fail for a while or to answer slowly. Each arrival says how
many posts of the same event it was still answering (``beside``): at least once allows
a post twice, never two at once.

Run by ``Receiver`` below as ``uvicorn tests.support.receiver:app`` on a free port;
``RECEIVER_SECRETS`` (comma-separated) are the secrets it accepts.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import tls
from .ports import free_port
from .processes import stop as stop_process

ROOT = Path(__file__).resolve().parents[2]

# What the shop has done: one entry per event id, however often it came.
processed: dict[str, dict[str, Any]] = {}
# Every request, in arrival order: {id, type, session, seq, verified, beside, answered}.
arrivals: list[dict[str, Any]] = []
# The posts of each event id being answered now.
answering: dict[str, int] = {}
# Behaviour the tests set: answer `fail` requests with `status`, then answer `slow`
# requests only after `slow_ms`; `redirect` requests with 307 to /elsewhere (which
# records what reaches it and accepts it); `endless` requests with 200 and a body that
# keeps coming (64 KiB every 10 ms, for a minute) after the shop did its work.
control: dict[str, int] = {
    "fail": 0,
    "status": 503,
    "slow": 0,
    "slow_ms": 0,
    "redirect": 0,
    "endless": 0,
}
# The requests that reached /elsewhere (a redirect followed): their webhook-id.
elsewhere: list[str] = []


# The last webhooks as received: body (base64) and the three headers.
raw_kept: list[dict[str, Any]] = []
STANDARD_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


def verified(raw: bytes, headers: dict[str, str]) -> str | None:
    """None when one of the shop's secrets verifies the webhook, else the last error."""
    error = "no secret"
    for secret in os.environ.get("RECEIVER_SECRETS", "").split(","):
        try:
            Webhook(secret).verify(raw, headers)
            return None
        except WebhookVerificationError as exc:
            error = str(exc)
    return error


async def webhook(request: Request) -> Response:
    raw = await request.body()
    headers = {name: request.headers.get(name, "") for name in STANDARD_HEADERS}
    raw_kept.append({"body": base64.b64encode(raw).decode(), "headers": headers})
    del raw_kept[:-20]
    error = verified(raw, headers)
    if error is not None:
        arrivals.append({"verified": False, "error": error, "answered": 400})
        return JSONResponse({"error": error}, status_code=400)
    event = await request.json()
    assert headers["webhook-id"] == event["id"]
    entry = {
        "id": event["id"],
        "type": event["type"],
        "session": event["session"]["id"],
        "status": event["session"]["status"],
        "seq": event["seq"],
        "verified": True,
        "signatures": len(headers["webhook-signature"].split(" ")),
        "beside": answering.get(event["id"], 0),
    }
    arrivals.append(entry)
    answering[event["id"]] = entry["beside"] + 1
    try:
        return await answer(event, entry)
    finally:
        answering[event["id"]] -= 1


async def answer(event: dict[str, Any], entry: dict[str, Any]) -> Response:
    """The shop's answer to a verified post, as the tests set it (``control``)."""
    if control["redirect"] > 0:
        control["redirect"] -= 1
        entry["answered"] = 307
        return Response(status_code=307, headers={"location": "/elsewhere"})
    if control["fail"] > 0:
        control["fail"] -= 1
        entry["answered"] = control["status"]
        return JSONResponse({"error": "down for a while"}, status_code=control["status"])
    # The shop's work, once per event id (the README's receiver does the same).
    processed.setdefault(event["id"], event)
    if control["endless"] > 0:
        control["endless"] -= 1
        entry["answered"] = "endless"
        return StreamingResponse(endless_body(), media_type="text/plain")
    if control["slow"] > 0:
        control["slow"] -= 1
        entry["answered"] = "slow"
        await asyncio.sleep(control["slow_ms"] / 1000)
    else:
        entry["answered"] = 200
    return JSONResponse({"ok": True})


async def endless_body() -> AsyncIterator[bytes]:
    chunk = b"x" * 65_536
    for _ in range(6_000):  # a minute: past any timeout a test sets
        yield chunk
        await asyncio.sleep(0.01)


async def redirected(request: Request) -> Response:
    elsewhere.append(request.headers.get("webhook-id", ""))
    return JSONResponse({"ok": True})


async def set_control(request: Request) -> Response:
    control.update(await request.json())
    return JSONResponse(control)


async def seen(request: Request) -> Response:
    return JSONResponse(
        {
            "arrivals": arrivals,
            "processed": list(processed.values()),
            "raw": raw_kept,
            "elsewhere": elsewhere,
        }
    )


app = Starlette(
    routes=[
        Route("/webhook", webhook, methods=["POST"]),
        Route("/elsewhere", redirected, methods=["POST"]),
        Route("/control", set_control, methods=["POST"]),
        Route("/seen", seen, methods=["GET"]),
    ]
)


class Receiver:
    """The receiver app in its own uvicorn process on a free loopback port."""

    def __init__(self, secrets: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.url = self.base + "/webhook"
        env = {**os.environ, "RECEIVER_SECRETS": secrets}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "tests.support.receiver:app",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        deadline = time.monotonic() + 60  # a loaded machine starts processes slowly
        while True:
            try:
                httpx.get(self.base + "/seen", timeout=0.5, verify=tls.CONTEXT)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("the receiver did not start") from None
                time.sleep(0.05)

    def set(self, **behaviour: int) -> None:
        httpx.post(
            self.base + "/control", json=behaviour, timeout=2, verify=tls.CONTEXT
        ).raise_for_status()

    def seen(self) -> dict[str, list[dict[str, Any]]]:
        reply = httpx.get(self.base + "/seen", timeout=2, verify=tls.CONTEXT)
        reply.raise_for_status()
        return reply.json()  # type: ignore[no-any-return]

    def close(self) -> None:
        stop_process(self.proc)
