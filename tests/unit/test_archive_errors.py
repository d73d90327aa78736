"""Which of PostgreSQL's errors the archive takes for a database that cannot serve it
now (backed off, said once, reported in ``/readyz``: ``ArchiveRefused``) and which for
a defect of paylive's own SQL, left loud (a 500 and its traceback)."""

from __future__ import annotations

import asyncpg
import pytest

from paylive.archive import ArchiveRefused, ArchiveUnavailable
from paylive.archive.store import _failed


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.ReadOnlySQLTransactionError,  # 25006: a failover to a replica
        asyncpg.exceptions.InsufficientPrivilegeError,  # 42501: a grant taken away
        asyncpg.exceptions.DiskFullError,  # 53100
        asyncpg.exceptions.QueryCanceledError,  # 57014: the server's statement timeout
        asyncpg.exceptions.SerializationError,  # 40001
        asyncpg.exceptions.DeadlockDetectedError,  # 40P01
        asyncpg.exceptions.LockNotAvailableError,  # 55P03
    ],
)
def test_a_database_that_cannot_serve_now_is_refused(error: type[Exception]) -> None:
    failed = _failed(error("refused"))
    assert isinstance(failed, ArchiveRefused) and failed.sqlstate == error.sqlstate


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.exceptions.PostgresSyntaxError,  # 42601
        asyncpg.exceptions.UndefinedColumnError,  # 42703
        asyncpg.exceptions.DataError,  # 22000
        asyncpg.exceptions.NotNullViolationError,  # 23502
    ],
)
def test_a_defect_of_our_own_sql_stays_loud(error: type[Exception]) -> None:
    assert _failed(error("ours")) is None


def test_an_unreachable_database_is_unavailable() -> None:
    failed = _failed(ConnectionRefusedError("refused"))
    assert isinstance(failed, ArchiveUnavailable) and not isinstance(failed, ArchiveRefused)
