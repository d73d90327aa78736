"""Hooks run when the server is asked to stop, before uvicorn closes connections
itself (it would close every socket at once with 1012 and no hint).

A hook is the worker's drain (``Runtime.drain``): it gets a function that says
whether the stop was forced (a second signal), so that it can cut its window short.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Forced = Callable[[], bool]
Hook = Callable[[Forced], Awaitable[None]]

_hooks: list[Hook] = []


def register(hook: Hook) -> None:
    _hooks.append(hook)


def unregister(hook: Hook) -> None:
    if hook in _hooks:
        _hooks.remove(hook)


async def run_hooks(forced: Forced) -> None:
    for hook in list(_hooks):
        await hook(forced)
