from __future__ import annotations

import pytest

# The suite runs in parallel (pytest-xdist, ``--dist loadgroup`` in pyproject.toml):
# a file's tests stay together on one process, with the servers its fixtures start.
# The files that load the whole machine (thousands of sockets, a benchmark) share one
# process, so that they run one after the other and never beside each other.
HEAVY = frozenset({"tests/load/test_restart.py", "tests/load/test_bench.py"})


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = item.nodeid.split("::", 1)[0]
        item.add_marker(pytest.mark.xdist_group("heavy" if path in HEAVY else path))


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"
