"""The four plots of BENCHMARKS.md, drawn from ``summary.json`` with matplotlib."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402

MARKERS = ("o", "s", "^", "D")


def _series(
    rows: list[dict[str, Any]], system: str, x: str, y: Callable[[dict[str, Any]], float | None]
) -> tuple[list[float], list[float]]:
    points = sorted(
        (r[x], y(r))
        for r in rows
        if r["system"] == system and "failed" not in r and y(r) is not None
    )
    return [p[0] for p in points], [p[1] for p in points]  # type: ignore[misc]


def _plot(
    summary: dict[str, Any],
    rows: list[dict[str, Any]],
    x: str,
    y: Callable[[dict[str, Any]], float | None],
    title: str,
    xlabel: str,
    ylabel: str,
    path: Path,
    scale: str = "linear",
) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=100)
    for marker, (name, label) in zip(MARKERS, summary["labels"].items(), strict=False):
        xs, ys = _series(rows, name, x, y)
        if xs:
            ax.plot(xs, ys, marker=marker, label=label)
    if scale == "symlog":
        ax.set_yscale("symlog", linthresh=1)
    elif scale == "log":
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    meta = summary["meta"]
    fig.text(0.99, 0.01, f"{meta['commit']}, {meta['date']}", ha="right", fontsize=7, alpha=0.6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_all(summary: dict[str, Any], out: Path) -> None:
    meta, rates = summary["meta"], summary["rates"]
    load = f"{meta['sockets']:,} sockets + {meta['admins']} admin feeds"
    _plot(summary, rates, "rate", lambda r: r["p99"],
          f"p99 delivery latency, customer sockets\n({load})", "state changes/s asked", "ms (log)",
          out / "p99.png", "log")  # fmt: skip
    _plot(summary, rates, "rate", lambda r: r["lost"] + r["admin_lost"],
          f"events lost, customer sockets + admin feeds\n({load})", "state changes/s asked",
          "events (symlog)", out / "lost.png", "symlog")  # fmt: skip
    _plot(summary, rates, "rate", lambda r: r["cpu_per_1000"],
          "server CPU per 1,000 changes (server + Redis)", "state changes/s asked",
          "CPU seconds", out / "cpu.png")  # fmt: skip
    _plot(summary, summary["idle"], "sockets", lambda r: r["kb_per_socket"],
          "server RSS per idle socket", "sockets", "KB per socket", out / "rss.png")  # fmt: skip
