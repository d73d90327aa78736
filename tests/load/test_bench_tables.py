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


def _run(system: str, turn: int, cpu: float | None, **more: object) -> dict[str, object]:
    row: dict[str, object] = {"system": system, "rate": 1000, "round": turn}
    if cpu is None:
        return {**row, "failed": "the server did not start"}
    return {
        **row,
        "cpu_per_1000": cpu,
        "done_per_s": 1000.0 - turn,
        "p99": 10.0 * turn,
        "refused_p50": None,
        **more,
    }


def test_with_rounds_each_system_shows_its_median_run_and_the_spread_its_ratio() -> None:
    from bench.summary import _spread_table, median_runs, spread

    rows = [
        _run("paylive-memory", 1, 0.70),
        _run("paylive-redis", 1, 1.05),
        _run("paylive-memory", 2, 0.60),
        _run("paylive-redis", 2, 1.20),
        _run("paylive-memory", 3, 0.80),
        _run("paylive-redis", 3, None),
    ]
    picked = {r["system"]: r for r in median_runs(rows)}
    # A run that happened, not a blend: memory's middle one is round 1 (0.70); of the
    # Redis pair's two measured, the lower middle (round 1); the failed one counts apart.
    assert picked["paylive-memory"]["round"] == 1
    assert picked["paylive-redis"]["round"] == 1
    assert (picked["paylive-redis"]["rounds_measured"], picked["paylive-redis"]["rounds_run"]) == (
        2,
        3,
    )
    table = {r["system"]: r for r in spread(rows, ["paylive-memory", "paylive-redis"])}
    assert table["paylive-memory"]["cpu_over_memory"] is None
    ratio = table["paylive-redis"]["cpu_over_memory"]
    # Each round over memory's in the same round: 1.05 / 0.70 and 1.20 / 0.60.
    assert ratio is not None
    assert (round(ratio["min"], 3), round(ratio["max"], 3)) == (1.5, 2.0)
    assert round(ratio["median"], 3) == 1.75
    lines = _spread_table(
        {
            "labels": {"paylive-memory": "memory", "paylive-redis": "pair"},
            "spread": list(table.values()),
        }
    )
    pair = next(line for line in lines if line.startswith("| 1,000 | pair"))
    assert "| 2 of 3 |" in pair and pair.endswith("| 1.75 (1.50 to 2.00) |")


def test_one_round_keeps_every_run_and_adds_no_table() -> None:
    from bench.summary import _spread_table

    assert _spread_table({"labels": {}, "spread": []}) == []
