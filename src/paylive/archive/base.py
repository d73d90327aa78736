"""What the rest of paylive knows of the archive without loading its driver."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import PayliveError


class ArchiveUnavailable(PayliveError):
    """The archive cannot be used right now: PostgreSQL cannot be reached (this class)
    or answers and refuses the work (``ArchiveRefused``); nothing was written.

    ``error`` (the cause's class name) and ``sqlstate`` (PostgreSQL's, when it gave
    one) are for the log, the metrics and ``/readyz``; a client is told neither."""

    def __init__(self, message: str, error: str | None = None, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.error = error
        self.sqlstate = sqlstate


class ArchiveRefused(ArchiveUnavailable):
    """PostgreSQL answers and refuses the work: a read-only replica a failover left the
    pool on (SQLSTATE 25006), permission denied (42501), a full disk (53100), a
    statement timeout (57014), a serialization failure (40001)... It is tried again as
    an unreachable PostgreSQL is: the cause is the operator's to remove."""


@dataclass(frozen=True)
class SessionQuery:
    """A search: any of these, newest first."""

    session_id: str | None = None
    order_id: str | None = None
    status: str | None = None
    created_from: int | None = None  # epoch ms, inclusive
    created_to: int | None = None  # epoch ms, exclusive
    limit: int = 50


@dataclass(frozen=True)
class AuditQuery:
    """Filters of ``GET /api/admin/audit``; ``at_from`` inclusive, ``at_to`` exclusive;
    ``before``: only entries after this (at, id) in the trail's order, newest first (the
    last entry of the page before, so that pages neither skip nor repeat an entry);
    ``after``: only entries newer than this (at, id), and the page is the ``limit``
    oldest of them (the first entry of the page before, read forwards)."""

    session_id: str | None = None
    staff: str | None = None
    at_from: int | None = None
    at_to: int | None = None
    before: tuple[int, str] | None = None
    after: tuple[int, str] | None = None
    limit: int = 100

    def matches(self, entry: dict[str, Any]) -> bool:
        at = int(entry.get("at") or 0)
        return (
            (self.session_id is None or entry.get("session") == self.session_id)
            and (self.staff is None or entry.get("staff") == self.staff)
            and (self.at_from is None or at >= self.at_from)
            and (self.at_to is None or at < self.at_to)
            and (self.before is None or audit_order(entry) < self.before)
            and (self.after is None or audit_order(entry) > self.after)
        )

    def page(self, entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The page of ``entries`` (all matching) this query answers, newest first."""
        # Read forwards, the page is the oldest ``limit``: the newest would skip the
        # entries between the place and them.
        ordered = sorted(entries, key=audit_order, reverse=self.after is None)[: self.limit]
        return ordered if self.after is None else ordered[::-1]


def audit_order(entry: dict[str, Any]) -> tuple[int, str]:
    """Where an entry stands in the trail: by ``at``, then by id (ties in one ms)."""
    return int(entry.get("at") or 0), str(entry["id"])
