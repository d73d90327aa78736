"""Seeded random lives checked in blocks: one test per block of seeds, not one per seed.

Under pytest-xdist every test is a report sent to the controller and printed there:
about 1.3 CPU-ms a test beside the 0.6 ms that a life costs (2,000 lives of
``tests/unit/test_money.py`` took 3.8 CPU-seconds on two processes and 1.2 on one,
start-up aside). A block runs every one of its seeds, also after one failed, and fails
with each failing seed and its assertion, so that a failure still names its seed
(``check(seed)`` alone reproduces it).
"""

from __future__ import annotations

from collections.abc import Callable

BLOCK = 50


def blocks(count: int, size: int = BLOCK) -> list[range]:
    """``range(count)`` in blocks of ``size`` seeds."""
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def check_seeds(seeds: range, check: Callable[[int], None]) -> None:
    failed = []
    for seed in seeds:
        try:
            check(seed)
        except AssertionError as error:
            failed.append(f"seed {seed}: {error}")
    assert not failed, f"{len(failed)} of {len(seeds)} seeds failed:\n" + "\n\n".join(failed)
