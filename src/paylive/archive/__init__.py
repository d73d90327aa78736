"""The durable archive in PostgreSQL (``PAYLIVE_DATABASE_URL``): see store.py."""

from __future__ import annotations

from .store import Archive, ArchiveUnavailable, SessionQuery

__all__ = ["Archive", "ArchiveUnavailable", "SessionQuery"]
