"""Hooks run when the server is asked to stop, before uvicorn closes connections
itself (it would close sockets with 1012; the protocol promises 1001)."""

from __future__ import annotations

from collections.abc import Callable

_hooks: list[Callable[[], None]] = []


def register(hook: Callable[[], None]) -> None:
    _hooks.append(hook)


def unregister(hook: Callable[[], None]) -> None:
    if hook in _hooks:
        _hooks.remove(hook)


def run_hooks() -> None:
    for hook in list(_hooks):
        hook()
