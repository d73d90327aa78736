"""Retention: the archive follows the events log into PostgreSQL, the log is trimmed
behind it, and the archive is purged past its days. (What is read from the archive
is read through ``service/reads.py``, the one read model.)

The engine holds live sessions and, for ``PAYLIVE_REDIS_RETENTION_MS`` after they
end, their state and history; it holds the events log for as long too. With
``PAYLIVE_DATABASE_URL`` the archive follows the log (``follow``), and a session,
an event or a search the engine has forgotten is read from it. The log is trimmed
only past the archive's mark, so PostgreSQL being down delays the archive, never
loses from it.

Why the archive follows the log rather than taking items of the outbox as webhooks
do: the outbox is what makes the log (each merchant event is saved with its
decision and listed from the outbox, once per id), and the archive is the log's
continuation. The events API reads the archive below the log's first cursor and the
engine above it, so the archive must hold a prefix of the log in cursor order with
its mark; a follower that writes a batch and its mark in one transaction gives
exactly that, each event written once, 500 per transaction. Per-session outbox items
would arrive in any order, one transaction each, and leave no mark to trim the log
by. What the follower shares with the outbox is its backoff while PostgreSQL is down
or refuses its writes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import metrics
from ..archive import ArchiveUnavailable
from ..core.effects import backoff_ms
from ..engine import Engine, EngineUnavailable
from ..settings import ArchiveSettings

if TYPE_CHECKING:
    from ..archive.store import Archive, LogRows

log = logging.getLogger("paylive.retention")

DAY_MS = 24 * 3600 * 1000
TRIM_BATCH = 1_000
# The follower's longest wait between tries while PostgreSQL is down.
FOLLOW_RETRY_CAP_MS = 5_000
# While the archive's writes keep failing the same way, the warning is repeated this often.
OUTAGE_WARN_EVERY_MS = 60_000


class Retention:
    """How long the engine keeps the events log and the archive keeps it after:
    the follower of the log into the archive, and the housekeeping of both."""

    def __init__(
        self,
        settings: ArchiveSettings,
        engine: Engine,
        archive: Archive | None,
        clock: Callable[[], int],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.archive = archive
        self.clock = clock
        self._failures = 0
        self._retry_at = 0
        self._down_since = 0
        self._warned_at = 0
        # What the last failed try failed with, (class name, SQLSTATE): a change of it
        # is said, a try failing as the one before is not.
        self._failing: tuple[str, str | None] | None = None

    def status(self) -> dict[str, Any] | None:
        """For ``/readyz``'s body: whether this worker's last try wrote (or found
        nothing to write), and else what it failed with and since when (epoch ms).
        None without an archive."""
        if self.archive is None:
            return None
        if self._failing is None:
            return {"writing": True, "error": None, "sqlstate": None, "since": None}
        error, sqlstate = self._failing
        return {"writing": False, "error": error, "sqlstate": sqlstate, "since": self._down_since}

    async def follow(self) -> None:
        """Archive what the log holds past the archive's mark (one batch a call);
        while PostgreSQL is down or refuses the writes, try again with the outbox's
        backoff."""
        if self.archive is None or self.clock() < self._retry_at:
            return
        batch = self.settings.archive_batch

        async def read(mark: int) -> LogRows:
            # An engine that lost its log (a new Redis, or one restarted without
            # persistence while this worker runs) must give no cursor again at or
            # below the archive's mark: the follower reads past it only. Every round,
            # not once a process, and from the mark, not from the highest cursor the
            # archive still holds (nothing, once its purge took every event).
            await self.engine.log_seed(mark)
            return await self.engine.log_read(mark, batch)

        try:
            await self.archive.follow(read)
        except EngineUnavailable:
            raise  # the engine's to report (readiness), not the archive's
        except ArchiveUnavailable as exc:
            self._failed(exc, exc.error or type(exc).__name__, exc.sqlstate)
            raise
        except Exception as exc:
            # Neither PostgreSQL nor the engine: a record this code cannot write. Said
            # once with its traceback and tried with the same backoff, not every poll.
            self._failed(exc, type(exc).__name__, None)
            return
        if self._failing is not None:
            log.warning(
                "archive: writing again after %d s; catching up",
                (self.clock() - self._down_since) // 1000,
            )
            metrics.archive_writing()
        self._failures = 0
        self._failing = None

    def _failed(self, exc: Exception, error: str, sqlstate: str | None) -> None:
        """Count a failed try, say it if it fails otherwise than the one before, and
        put the next one off (capped exponential backoff with jitter)."""
        now = self.clock()
        what = f"{error}, SQLSTATE {sqlstate}" if sqlstate else error
        if self._failing is None:
            self._down_since = now
        if self._failing != (error, sqlstate):
            self._warned_at = now
            if isinstance(exc, ArchiveUnavailable):
                log.warning(
                    "archive: cannot write (%s): %s; the events log keeps everything "
                    "until it is written",
                    what,
                    exc,
                )
            else:
                log.error(
                    "archive: cannot write (%s); tried again with backoff", what, exc_info=exc
                )
        elif now - self._warned_at >= OUTAGE_WARN_EVERY_MS:
            # Redis holds every event the archive has not taken: a long outage grows
            # it, so it is said again and again, not once.
            self._warned_at = now
            log.warning(
                "archive: still failing after %d s (%s); the events log in the engine "
                "grows until it is written",
                (now - self._down_since) // 1000,
                what,
            )
        self._failing = (error, sqlstate)
        metrics.archive_failed(sqlstate)
        self._failures += 1
        poll = self.settings.archive_poll_ms
        delay = backoff_ms(self._failures, random.random(), poll, max(poll, FOLLOW_RETRY_CAP_MS))
        self._retry_at = now + delay

    async def housekeeping(self) -> None:
        """Trim the log past its window (and past the archive's mark), and purge the
        archive past ``PAYLIVE_ARCHIVE_DAYS``."""
        now = self.clock()
        upto = 2**62
        if self.archive is not None:
            try:
                upto = await self.archive.mark()
                await self.archive.purge(now - self.settings.archive_days * DAY_MS)
            except ArchiveUnavailable:
                return  # nothing is trimmed that the archive may not have
        await self.engine.log_trim(now - self.settings.retention_after_end_ms, upto, TRIM_BATCH)
