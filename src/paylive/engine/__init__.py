"""Where sessions, their history, timers and fan-out live: memory or Redis."""

from __future__ import annotations

from ..settings import Settings
from .base import (
    AuditAdd,
    Claim,
    Engine,
    EngineUnavailable,
    FanOut,
    RecordClaim,
    RecordStore,
    SessionStore,
    TimerStore,
)

__all__ = [
    "AuditAdd",
    "Claim",
    "Engine",
    "EngineUnavailable",
    "FanOut",
    "RecordClaim",
    "RecordStore",
    "SessionStore",
    "TimerStore",
    "create_engine",
]


def create_engine(settings: Settings) -> Engine:
    """The Redis engine when ``PAYLIVE_REDIS_URL`` is set, else the in-memory one."""
    if settings.redis_url:
        from .redis import RedisEngine

        return RedisEngine(settings.redis_url, settings.redis)
    from .memory import MemoryEngine

    return MemoryEngine(settings.engine)
