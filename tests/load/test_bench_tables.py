"""The bench's second table shows the 503s' tail, not only their median: the refusals
that waited for a worker to accept their connection were 1 % of them (BENCHMARKS.md,
"New connections under overload") and left the p50 as it was."""

from __future__ import annotations

from bench.summary import _tail_and_cost


def test_the_503_cell_has_p50_p99_and_max_and_a_dash_without_refusals() -> None:
    rows = [
        {"system": "a", "rate": 3000, "refused_p50": 12.9, "refused_p99": 1518.9},
        {"system": "b", "rate": 500, "refused_p50": None, "refused_p99": None},
    ]
    rows[0]["refused_max"] = 3281.16
    rows[1]["refused_max"] = None
    lines = _tail_and_cost({"labels": {"a": "A", "b": "B"}, "rates": rows})
    assert "503 p50 / p99 / max ms" in lines[1]
    by_system = {line.split(" | ")[1]: line.split(" | ")[3] for line in lines[3:]}
    assert by_system == {"B": "-", "A": "12.9 / 1,518.9 / 3,281.2"}
