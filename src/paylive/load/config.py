"""A run's plan: the flags checked once, then one typed ``Config`` per worker process."""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import asdict, dataclass, fields
from typing import Literal, TypeVar
from urllib.parse import urlsplit

from ..errors import PayliveError
from ..settings import SettingsError, secret_list

SOCKETS_PER_PROCESS = 2_500
OPEN_FILES_HARD = 20_000
MAX_RATE = 100_000
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

Mode = Literal["ws", "poll"]
Format = Literal["json", "msgpack"]
HttpClient = Literal["raw", "httpx"]

N = TypeVar("N", int, float)


class LoadError(PayliveError):
    """The run cannot start or a worker failed; the message says which."""


@dataclass(frozen=True)
class Config:
    """What one worker process does; sent to it as the first JSON line on stdin."""

    index: int
    base_url: str
    ws_url: str
    api_key: str
    admin_token: str | None
    sockets: int
    admins: int
    rate: float
    duration: float
    format: Format = "json"
    mode: Mode = "ws"
    concurrency: int = 256
    poll_interval: float = 2.0
    poll_connections: int = 8
    drain: float = 5.0
    max_replacements: int = 10
    report_finals: bool = False
    http_client: HttpClient = "raw"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: str) -> Config:
        raw = json.loads(line)
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise LoadError(f"unknown configuration keys: {sorted(unknown)}")
        return cls(**raw)


def check_target(url: str, allow_remote: bool) -> tuple[str, str]:
    """The base HTTP URL and the WebSocket URL; refuses non-loopback hosts unless allowed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadError(f"--url must look like http://127.0.0.1:8000, got {url!r}")
    if parts.hostname not in LOOPBACK and not allow_remote:
        raise LoadError(
            f"refusing to load {parts.hostname}: only loopback targets (127.0.0.1, localhost, ::1) "
            "unless --allow-remote is given"
        )
    base = f"{parts.scheme}://{parts.netloc}"
    ws = ("wss" if parts.scheme == "https" else "ws") + f"://{parts.netloc}"
    return base, ws


def split(total: N, parts: int) -> list[N]:
    """``total`` spread over ``parts`` as evenly as possible (ints stay ints)."""
    if isinstance(total, int):
        return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
    return [total / parts] * parts


def _admin_token() -> str | None:
    """The server's admin token as the server reads it (``_FILE`` included); the first
    entry of a rotation list is the newest, and the whole list is no token."""
    try:
        listed = secret_list("PAYLIVE_ADMIN_TOKEN", os.environ)
    except SettingsError as exc:
        raise LoadError(str(exc)) from None
    return listed[0] if listed else None


def plan(args: argparse.Namespace) -> list[Config]:
    """Check the flags and share the work out; raises ``LoadError`` with the reason."""
    base, ws = check_target(args.url, bool(getattr(args, "allow_remote", False)))
    sockets, admins = int(args.sockets), int(args.admins or 0)
    rate, duration = float(args.rate), float(args.duration)
    if sockets < 1:
        raise LoadError("--sockets must be at least 1")
    if admins < 0 or not 0 <= rate <= MAX_RATE or not 0 < duration <= 3600:
        raise LoadError(
            f"--admins must not be negative, --rate is 0 to {MAX_RATE:,}, --duration 0 to 3600 s"
        )
    token = getattr(args, "admin_token", None) or _admin_token()
    if admins and not token:
        raise LoadError("--admins needs --admin-token (or PAYLIVE_ADMIN_TOKEN)")
    processes = args.processes or max(1, math.ceil((sockets + admins) / SOCKETS_PER_PROCESS))
    if not 1 <= processes <= min(64, sockets):
        raise LoadError("--processes must be from 1 to 64, and no more than --sockets")
    mode: Mode = getattr(args, "mode", "ws") or "ws"
    concurrency = int(getattr(args, "concurrency", 256) or 256)
    if not 1 <= concurrency <= 4096:
        raise LoadError("--concurrency must be from 1 to 4096")
    if mode == "ws" and math.ceil(sockets / processes) + concurrency + 100 > OPEN_FILES_HARD - 500:
        raise LoadError(
            f"{math.ceil(sockets / processes)} sockets per process is too many for the "
            f"{OPEN_FILES_HARD}-file limit; use more --processes"
        )
    http_client: HttpClient = getattr(args, "http_client", None) or "raw"
    if http_client == "raw" and base.startswith("https:"):
        raise LoadError("the raw HTTP client speaks plain http; add --http-client httpx for https")
    poll_interval = float(getattr(args, "poll_interval", 2.0) or 2.0)
    if not 0.1 <= poll_interval <= 60:
        raise LoadError("--poll-interval must be from 0.1 to 60 s")
    shares = zip(
        split(sockets, processes), split(admins, processes), split(rate, processes), strict=True
    )
    return [
        Config(
            index=index,
            base_url=base,
            ws_url=ws,
            api_key=args.api_key,
            admin_token=token,
            sockets=n,
            admins=a,
            rate=r,
            duration=duration,
            format=args.format,
            mode=mode,
            concurrency=concurrency,
            poll_interval=poll_interval,
            # A browser polls over its own connection; a pool this size keeps the
            # generator's connection count sane while still spreading the load.
            poll_connections=max(8, min(256, n // 4)),
            drain=float(getattr(args, "drain", 5.0) or 5.0),
            max_replacements=max(10, int(r * duration)),
            report_finals=admins > 0,
            http_client=http_client,
        )
        for index, (n, a, r) in enumerate(shares)
    ]
