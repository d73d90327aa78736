"""The fixtures more than one tier uses, and the suite's scheduling.

Every fixture has one home: this file for those of several tiers, a tier's
``conftest.py`` for those of one tier (``tests/test_suite_layout.py`` fails on a
fixture name defined twice). A module says what it needs of a shared fixture by
module-level names:

- ``SERVER_ENV``: the ``server`` fixture's environment: a dict, or a function of the
  fixture request that returns one (it may ask for other fixtures, such as
  ``receiver`` or ``localstripe``, with ``request.getfixturevalue``, and read an
  indirect parameter as ``request.param``);
- ``CHECK_SERVER_LOG``: a function that the server's whole output, once it stopped,
  is given to (it asserts what the log must not hold);
- ``RECEIVER_SECRET``: the shop's webhook secret the ``receiver`` fixture checks.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import redisproc
from .support.localstripe import LocalStripe
from .support.receiver import Receiver
from .support.servers import Server

TESTS = Path(__file__).resolve().parent

# pytest rewrites every test module's asserts when it imports it, and caches the result
# only where bytecode may be written: with PYTHONDONTWRITEBYTECODE set (as on this
# machine), each of the parallel processes rewrote the whole suite on every run, about
# 3 of its 6 CPU-seconds of collection. The cache goes to __pycache__ (ignored by git);
# the servers the tests start keep the environment as it is.
sys.dont_write_bytecode = False

# The suite runs in parallel (pytest-xdist, ``-n 6 --dist loadfile`` in pyproject.toml):
# a file's tests stay together on one process, so that the servers its module-scoped
# fixtures start are started once. (xdist's own --dist loadgroup no longer groups
# anything under pytest 9, which ignores the node id it rewrites: every test was
# handed out alone, and a module's servers were started again on every process that
# ran one of its tests.)

# Files whose tests are independent cases against one module server, long enough to
# be the last process's tail alone: their tests are dealt into this many parts, each
# a group of its own with a server of its own (the CRC of the test id picks the part,
# so that every process computes the same one). A part costs a server start and, for
# the fuzz file, a schema load and a first Hypothesis run: two parts, not more.
SPLIT = {"tests/fuzz/test_openapi.py": 2, "tests/browser/test_accessibility.py": 2}
# Files whose tests share nothing (each starts its own servers or tools): every test is
# a group.
EACH = {"tests/load/test_bench.py", "tests/js/test_client_js.py"}

# The groups that take longest (wall seconds of a run of the whole suite on the 2-core
# machine, docs/testing.md) are handed out first, so that no long file starts last and
# keeps one process busy alone at the end. Files not listed are short and keep their
# collection order after these.
LONGEST_FIRST = [
    # Measured 2026-12-08 02:25 UTC in a working tree (wall seconds, 1,469 tests), the
    # test servers forked from the zygote (tests/support/zygote.py).
    "tests/load/test_bench.py",  # 53 s, one test a group
    "tests/browser/test_accessibility.py",  # 43 s, in two parts
    "tests/js/test_client_js.py",  # 39 s, one test a group
    "tests/fuzz/test_openapi.py",  # 30 s, in two parts
    "tests/integration/test_stripe.py",  # 24 s
    "tests/integration/test_preflight.py",  # 23 s
    "tests/browser/test_browser.py",  # 23 s
    "tests/integration/test_scaleout.py",  # 23 s
    "tests/integration/test_lost_replies.py",  # 22 s
    "tests/integration/test_slow_clients.py",  # 22 s
    "tests/browser/test_dashboard_staff.py",  # 20 s
    "tests/browser/test_transports.py",  # 20 s
    "tests/integration/test_archive.py",  # 19 s
    "tests/integration/test_edges.py",  # 19 s
    "tests/integration/test_effects.py",  # 18 s
    "tests/test_style.py",  # mypy without its cache, as on a fresh clone: 15-25 s
    "tests/engine/test_engine.py",  # 16 s
    "tests/browser/test_screenshots.py",  # 16 s
    "tests/integration/test_drain.py",  # 16 s
    "tests/integration/test_merchant_webhooks.py",  # 16 s
    "tests/browser/test_receipt.py",  # 14 s
    "tests/integration/test_sockets.py",  # 14 s
    "tests/integration/test_review_queue.py",  # 14 s
    "tests/integration/test_streams.py",  # 14 s
    "tests/load/test_restart.py",  # 13 s
    "tests/engine/test_readiness.py",  # 13 s
    "tests/engine/test_effect_lease.py",  # 12 s
    "tests/integration/test_observability.py",  # 12 s
    "tests/load/test_serverstats.py",  # 11 s
    "tests/browser/test_shop_panels.py",  # 10 s
    "tests/integration/test_hardening.py",  # 10 s
    "tests/load/test_load.py",  # 10 s
    "tests/browser/test_dashboard_work.py",  # 10 s
    "tests/integration/test_receipt.py",  # 8 s
    "tests/unit/test_properties.py",  # 8 s
    "tests/integration/test_cluster_lost_replies.py",  # 8 s
    "tests/test_suite_layout.py",  # 6 s
    "tests/integration/test_refunds.py",  # 5 s
    "tests/integration/test_bad_input.py",  # 5 s
    "tests/browser/test_stripe_checkout.py",  # 5 s
    "tests/engine/test_purge_kept.py",  # 5 s
]


def file_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def group_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its file, or a part of a split file."""
    path = file_of(nodeid)
    if path in EACH:
        return nodeid
    if path in SPLIT:
        return f"{path}#{zlib.crc32(nodeid.encode()) % SPLIT[path]}"
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {group: n for n, group in enumerate(LONGEST_FIRST)}

    def order(item: pytest.Item) -> tuple[int, str]:
        return rank.get(file_of(item.nodeid), len(rank)), group_of(item.nodeid)

    # A stable sort: within a group the order stays; a split file's parts follow each
    # other, and the unlisted files come after the listed ones, by name.
    items.sort(key=order)


class _FileGroups:
    """Hands out work to the xdist processes a group (``group_of``) at a time, in
    collection order (``--no-loadscope-reorder``)."""

    def pytest_xdist_make_scheduler(self, config: pytest.Config, log: Any) -> Any:
        from xdist.scheduler import LoadScopeScheduling

        class FileGroupScheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return group_of(nodeid)

        return FileGroupScheduling(config, log)


def _rewrite_once(config: pytest.Config) -> None:
    """Rewrite every test module's asserts into pytest's bytecode cache, once, before
    the processes start. On a fresh clone each of the processes (eight then) rewrote all of
    them itself, at the same moment (about 1.6 CPU-s each, 13 in all); done here
    first, every process finds them cached. This uses pytest's private functions: if
    they change, the processes rewrite as before."""
    try:
        from _pytest.assertion import rewrite

        state = config.stash[rewrite.assertstate_key]
        for path in sorted(TESTS.rglob("*.py")):
            if not (path.name.startswith("test_") or path.name == "conftest.py"):
                continue
            cache_dir = rewrite.get_cache_dir(path)
            pyc = cache_dir / (path.name[:-3] + rewrite.PYC_TAIL)
            if rewrite._read_pyc(path, pyc, state.trace) is not None:
                continue
            if rewrite.try_makedirs(cache_dir):
                source_hash, code = rewrite._rewrite_test(path, config)
                rewrite._write_pyc(state, code, source_hash, pyc)
    except (ImportError, AttributeError, KeyError, TypeError):
        return


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist"):
        config.pluginmanager.register(_FileGroups(), "paylive-file-groups")
        controller = not hasattr(config, "workerinput")
        if controller and config.getoption("numprocesses", None):
            _rewrite_once(config)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    """The module's ``paylive serve``, with the environment its ``SERVER_ENV`` gives."""
    declared: Any = getattr(request.module, "SERVER_ENV", {})
    env = declared(request) if callable(declared) else declared
    with Server(env) as running:
        yield running
        running.stop()
        log = running.log()
    check = getattr(request.module, "CHECK_SERVER_LOG", None)
    if check is not None:
        check(log)


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redisproc.RedisProc]:
    """One ``redis-server`` (append-only, so that a restart keeps its data) for the
    module; its tests use keys of their own sessions."""
    if redisproc.REDIS_SERVER is None:
        pytest.skip("redis-server is not on PATH")
    proc = redisproc.start_redis(tmp_path_factory.mktemp("redis"), appendonly=True)
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    """A shop's webhook endpoint that checks signatures with ``RECEIVER_SECRET``."""
    rx = Receiver(request.module.RECEIVER_SECRET)
    try:
        yield rx
    finally:
        rx.close()


@pytest.fixture(scope="module")
def localstripe() -> Iterator[LocalStripe]:
    with LocalStripe() as ls:
        yield ls
