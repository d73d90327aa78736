"""The server seen from /proc (CPU seconds, RSS and context switches of a process tree, the
machine's load), and this process's open-files limit.

This is how ``paylive load`` measures memory per socket and server CPU per second of
drive without any help from the server.
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass

MAX_CHILDREN = 64


@dataclass(frozen=True)
class ProcSample:
    at: float  # time.monotonic()
    cpu_s: float
    rss_kb: int
    # Times the processes gave up a core waiting (voluntary) or were switched out by the
    # scheduler (involuntary): two workers on two cores cost more per change than one,
    # and what grows with them is these, not the work (BENCHMARKS.md).
    voluntary: int = 0
    involuntary: int = 0

    def as_dict(self) -> dict[str, float]:
        return {"cpu_s": round(self.cpu_s, 3), "rss_mb": round(self.rss_kb / 1024, 1)}


def machine_busy_s() -> float | None:
    """CPU seconds all cores spent busy since boot (/proc/stat), to tell how much of the
    machine other processes took during a run: benchmarks on a shared box are noisy."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as fh:
                found.extend(int(x) for x in fh.read().split())
    except OSError:
        pass
    return found


def _stat(pid: int) -> ProcSample | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        with open(f"/proc/{pid}/status") as fh:
            status = {
                name: value
                for name, _, value in (line.partition(":") for line in fh)
                if name in ("VmRSS", "voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
            }
        rss = int(status.get("VmRSS", "0 kB").split()[0])
        voluntary = int(status.get("voluntary_ctxt_switches", "0"))
        involuntary = int(status.get("nonvoluntary_ctxt_switches", "0"))
    except (OSError, IndexError, ValueError):
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    # Fields 14 and 15 of stat (utime, stime), counted after the ")" that ends the name.
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    return ProcSample(time.monotonic(), cpu, rss, voluntary, involuntary)


def _sum(samples: list[ProcSample]) -> ProcSample:
    return ProcSample(
        time.monotonic(),
        sum(s.cpu_s for s in samples),
        sum(s.rss_kb for s in samples),
        sum(s.voluntary for s in samples),
        sum(s.involuntary for s in samples),
    )


def sample_tree(pid: int | None) -> ProcSample | None:
    """CPU seconds, RSS and context switches of ``pid`` plus its children (uvicorn
    workers), or None."""
    if pid is None:
        return None
    own = _stat(pid)
    if own is None:
        return None
    children = (_stat(child) for child in _children(pid)[:MAX_CHILDREN])
    return _sum([own, *(s for s in children if s is not None)])


def sample_each(pids: Iterable[int]) -> ProcSample | None:
    """The sum over several process trees (e.g. every redis-server a run uses), or None."""
    samples = [s for s in (sample_tree(pid) for pid in pids) if s is not None]
    if not samples:
        return None
    return _sum(samples)


def raise_nofile() -> int:
    """Lift this process's soft open-files limit to the hard one; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
