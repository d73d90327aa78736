"""What the rest of paylive knows of the archive without loading its driver."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PayliveError


class ArchiveUnavailable(PayliveError):
    """PostgreSQL cannot be reached right now; nothing was written."""


@dataclass(frozen=True)
class SessionQuery:
    """A search: any of these, newest first."""

    session_id: str | None = None
    order_id: str | None = None
    status: str | None = None
    created_from: int | None = None  # epoch ms, inclusive
    created_to: int | None = None  # epoch ms, exclusive
    limit: int = 50
