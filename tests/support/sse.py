"""A Server-Sent Events reader that knows only docs/protocol.md 4.2: it parses the
stream's lines into events (``id``, ``event``, ``data``) and keeps every one, but its
heartbeats: comments and ``event: ping`` are counted, as a page's EventSource would not
hand either to its ``onmessage``."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import httpx


@dataclass
class Event:
    data: dict[str, Any]
    id: str | None = None
    event: str = "message"

    @property
    def type(self) -> str:
        return str(self.data.get("type", self.event))


class Stream:
    """An open event stream: ``next()`` gives the next event (comments and pings are
    counted, in ``comments`` and ``pings``: each ping's data)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.events: list[Event] = []
        self.comments = 0
        self.pings: list[dict[str, Any]] = []
        self.retry: int | None = None
        self._lines: AsyncIterator[str] = response.aiter_lines()

    async def next(self, timeout: float = 5.0) -> Event | None:
        """The next event; None when the server ended the stream."""
        fields: dict[str, str] = {}
        data: list[str] = []
        with anyio.fail_after(timeout):
            async for line in self._lines:
                if line == "":
                    if data:
                        event = Event(
                            json.loads("\n".join(data)),
                            fields.get("id"),
                            fields.get("event", "message"),
                        )
                        if event.event == "ping":
                            self.pings.append(event.data)
                            fields, data = {}, []
                            continue
                        self.events.append(event)
                        return event
                    fields = {}
                    continue
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data":
                    data.append(value)
                elif name == "retry":
                    self.retry = int(value)
                else:
                    fields[name] = value
        return None

    async def until(self, predicate: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        deadline = time.monotonic() + timeout
        while True:
            event = await self.next(max(0.01, deadline - time.monotonic()))
            if event is None:
                raise AssertionError(f"the stream ended; got {[e.type for e in self.events]}")
            if predicate(event):
                return event

    async def state(self, status: str, timeout: float = 5.0) -> Event:
        return await self.until(
            lambda e: e.type == "state" and e.data["data"]["session"]["status"] == status,
            timeout,
        )

    def durable(self) -> list[Event]:
        return [e for e in self.events if e.type in ("state", "retry_prompt")]


async def ticket(http: httpx.AsyncClient, credential: str) -> str:
    reply = await http.post("/api/tickets", headers={"Authorization": f"Bearer {credential}"})
    assert reply.status_code == 201, reply.text
    return str(reply.json()["ticket"])
