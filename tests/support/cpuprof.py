"""Where the suite's CPU goes, per test file: an opt-in pytest plugin and its report.

    PAYLIVE_CPUPROF=/tmp/prof .venv/bin/python -m pytest -q -p tests.support.cpuprof
    .venv/bin/python -m tests.support.cpuprof /tmp/prof

Around each test (its fixtures' setup and teardown included) each test process reads
its own CPU and its reaped children's (``getrusage``) plus that of every live
descendant (``/proc``: servers, Redis, Chromium and its renderers, Node, with their own
reaped children), so a module's server is counted in the file that started it, and a
Chromium kept across files in the files that used it. A thread also samples every
descendant's own CPU every 250 ms to name the commands that took it (a process that
lives under 250 ms is missed there; the test servers, forked by
``tests/support/zygote.py``, are named ``zygote``). Each process writes ``<worker>.json`` to the
directory at its end. The report sums the files over the processes, largest first.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

TICK = os.sysconf("SC_CLK_TCK")
KINDS = ("chrom", "node", "redis-server", "paylive", "nginx", "localstripe", "bench", "mypy")
KINDS += ("pytest", "multiprocessing", "postgres", "zygote")

_files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
_tests: dict[str, tuple[float, float]] = {}
_seen: dict[int, list[Any]] = {}  # pid -> [kind, CPU-s, file]
_current = ["(start)"]


def _descendants() -> dict[int, tuple[str, int, int]]:
    """pid -> (comm, own ticks, reaped children's ticks) of every live descendant."""
    children: dict[int, list[int]] = defaultdict(list)
    stat: dict[int, tuple[str, int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        head, tail = text.rsplit(")", 1)
        fields = tail.split()
        children[int(fields[1])].append(int(entry))
        own, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        stat[int(entry)] = (head.split("(", 1)[1], own, reaped)
    found = {}
    todo = list(children[os.getpid()])
    while todo:
        pid = todo.pop()
        if pid in stat:
            found[pid] = stat[pid]
        todo.extend(children[pid])
    return found


def _kind(pid: int, comm: str) -> str:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:4]
        line = b" ".join(args).decode(errors="replace")
    except OSError:
        line = comm
    return next((kind for kind in KINDS if kind in line), comm)


def _sample() -> None:
    while True:
        for pid, (comm, own, _) in _descendants().items():
            if pid not in _seen:
                _seen[pid] = [_kind(pid, comm), 0.0, _current[0]]
            _seen[pid][1] = own / TICK
        time.sleep(0.25)


def _tree_cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = sum(mine + theirs for _, mine, theirs in _descendants().values()) / TICK
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime + live


def _out() -> Path | None:
    where = os.environ.get("PAYLIVE_CPUPROF")
    return Path(where) if where else None


def pytest_configure(config: pytest.Config) -> None:
    # The test processes only: under xdist the controller's descendants are the
    # test processes, whose trees they count themselves.
    if hasattr(config, "workerinput") or not config.getoption("numprocesses", None):
        threading.Thread(target=_sample, daemon=True).start()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    path = item.nodeid.split("::")[0]
    _current[0] = path
    cpu, wall = _tree_cpu(), time.monotonic()
    yield
    cpu, wall = _tree_cpu() - cpu, time.monotonic() - wall
    totals = _files[path]
    totals[0] += cpu
    totals[1] += wall
    totals[2] += 1
    _tests[item.nodeid] = (cpu, wall)


def pytest_sessionfinish(session: pytest.Session) -> None:
    out = _out()
    if out is None or not _tests:
        return
    out.mkdir(parents=True, exist_ok=True)
    own = resource.getrusage(resource.RUSAGE_SELF)
    record = {
        "files": dict(_files),
        "tests": _tests,
        "procs": list(_seen.values()),
        "self": own.ru_utime + own.ru_stime,
    }
    name = os.environ.get("PYTEST_XDIST_WORKER", "main")
    (out / f"{name}.json").write_text(json.dumps(record))


def report(directory: Path, top: int = 30) -> str:
    files: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    kinds: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    tests: dict[str, tuple[float, float]] = {}
    for path in sorted(directory.glob("*.json")):
        record = json.loads(path.read_text())
        tests.update(record["tests"])
        for name, (cpu, wall, count) in record["files"].items():
            files[name][0] += cpu
            files[name][1] += wall
            files[name][2] += count
        for kind, cpu, _ in record["procs"]:
            kinds[kind][0] += cpu
            kinds[kind][1] += 1
    cpu = sum(v[0] for v in files.values())
    wall = sum(v[1] for v in files.values())
    lines = [f"tests' CPU (their process trees) {cpu:.1f} s, their wall {wall:.1f} s"]
    by_kind = sorted(kinds.items(), key=lambda kv: -kv[1][0])[:12]
    lines.append("sampled: " + ", ".join(f"{k} {v[0]:.1f} s/{v[1]:.0f}" for k, v in by_kind))
    lines.append("   CPU s   wall s  tests  file")
    for name, (c, w, n) in sorted(files.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"{c:8.1f} {w:8.1f} {n:6.0f}  {name}")
    lines.append("   CPU s   wall s  test")
    for name, (c, w) in sorted(tests.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(f"{c:8.2f} {w:8.2f}  {name}")
    return "\n".join(lines)


if __name__ == "__main__":
    print(report(Path(sys.argv[1])))
