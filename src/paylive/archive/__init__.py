"""The durable archive in PostgreSQL (``PAYLIVE_DATABASE_URL``): see store.py.

``open_archive`` loads the driver (the ``archive`` extra) only when it is asked for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import ArchiveRefused, ArchiveUnavailable, AuditQuery, SessionQuery, audit_order

if TYPE_CHECKING:
    from .store import Archive

__all__ = [
    "ArchiveRefused",
    "ArchiveUnavailable",
    "AuditQuery",
    "SessionQuery",
    "audit_order",
    "open_archive",
]


def open_archive(dsn: str) -> Archive:
    try:
        from .store import Archive
    except ImportError as exc:
        raise RuntimeError(
            "PAYLIVE_DATABASE_URL needs the PostgreSQL driver: pip install 'paylive[archive]'"
        ) from exc
    return Archive(dsn)
