"""Bounded polling for conditions that become true on their own (a webhook, a flush)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from typing import Any

import anyio


async def until(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    """Poll ``check`` (plain or async) until it returns something true; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s")
        await anyio.sleep(0.05)
