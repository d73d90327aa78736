"""Prometheus metrics (``GET /metrics``).

One worker: this process's registry. Several workers (``--workers``): uvicorn's
workers share one port, so a scrape lands on any of them; ``paylive serve`` then sets
``PROMETHEUS_MULTIPROC_DIR`` and every worker renders the sum over all of them.

Process metrics (``process_*``: CPU, memory, open files) are the client library's,
on the same registry. With several workers they cannot be summed from files, so each
live worker's are read from ``/proc`` and labelled ``worker`` (its process id).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .core.decision import Decision
from .core.effects import KINDS

# With several workers every update of a value first asks the process id (os.getpid,
# a system call) to notice a fork: 3 % of a worker's samples at its ceiling (py-spy).
# The id is kept here instead, and set again in a child after a fork, which is what
# that check is for.
_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def _pid() -> int:
    return _PID[0]


if values.ValueClass is not values.MutexValue:  # PROMETHEUS_MULTIPROC_DIR is set
    values.ValueClass = values.MultiProcessValue(process_identifier=_pid)

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = CONTENT_TYPE_LATEST
PROCESS = ProcessCollector(registry=REGISTRY)

HTTP_DURATION = Histogram(
    "paylive_http_request_duration_seconds",
    "HTTP requests, from their headers to the end of the answer, by method, route "
    "template and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
SOCKET_COMMANDS = Histogram(
    "paylive_socket_command_duration_seconds",
    "Customer socket commands, from the frame read to the answer queued, by type",
    ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
# A label value from a client (its method) is one of these or "other": a metric's
# series must stay bounded whatever is sent.
_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})

SOCKETS = Gauge(
    "paylive_sockets_open",
    "WebSockets open",
    ["kind"],
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
EVENTS_PUBLISHED = Counter(
    "paylive_events_published_total",
    "Durable events saved and published by this worker",
    ["type"],
    registry=REGISTRY,
)
EVENTS_DELIVERED = Counter(
    "paylive_events_delivered_total",
    "Messages written to sockets by this worker",
    ["type"],
    registry=REGISTRY,
)
DELIVERY_LATENCY = Histogram(
    "paylive_delivery_latency_seconds",
    "From a durable event's timestamp to its socket write",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
INTERRUPTIONS = Counter(
    "paylive_interruptions_total", "Attempts interrupted, by reason", ["reason"], registry=REGISTRY
)
LATE_SUCCESSES = Counter(
    "paylive_late_successes_total",
    "Sessions that succeeded after their attempt had ended",
    registry=REGISTRY,
)
REFUNDS = Counter(
    "paylive_refunds_total",
    "Charges refunded (late or duplicate successes), by cause",
    ["cause"],
    registry=REGISTRY,
)
CAS_CONFLICTS = Counter(
    "paylive_cas_conflicts_total",
    "Saves that lost a race and were decided again",
    registry=REGISTRY,
)
SLOW_CONSUMERS = Counter(
    "paylive_slow_consumers_total",
    "Sockets closed with 1013 because they fell behind",
    registry=REGISTRY,
)
OVERLOADED = Counter(
    "paylive_overloaded_total",
    "Commands refused at the door because too much work was in flight",
    registry=REGISTRY,
)
REFUSED_EARLY = Counter(
    "paylive_refused_before_body_total",
    "Of the commands refused at the door, those answered by the connection protocol "
    "from their headers: no task made, no body read",
    registry=REGISTRY,
)
IN_FLIGHT = Gauge(
    "paylive_in_flight",
    "Commands being worked on (admitted at the door and not yet answered)",
    registry=REGISTRY,
    multiprocess_mode="livesum",
)
IN_FLIGHT_LIMIT = Gauge(
    "paylive_in_flight_limit",
    "The worker's current bound on commands in flight (adaptive: follows latency)",
    registry=REGISTRY,
    # "live": a dead worker's bound leaves with its files (``render``), not listed for ever.
    multiprocess_mode="liveall",
)
PROVIDER_DEADLINE = Counter(
    "paylive_provider_deadline_total",
    "Provider calls inside a request or timer cut off by PAYLIVE_PROVIDER_DEADLINE_MS",
    registry=REGISTRY,
)
UNHELD_RESULTS = Counter(
    "paylive_provider_results_unheld_total",
    "Provider results for a session paylive does not hold (purged or never made), by "
    "whether they say money moved",
    ["money"],
    registry=REGISTRY,
)
RESYNCS = Counter(
    "paylive_resyncs_total",
    "Times the fan-out subscription was lost and rebuilt",
    registry=REGISTRY,
)
CATCH_UPS = Counter(
    "paylive_resync_catch_ups_total",
    "Channels caught up after a resync or a gap, by how (replay from history or snapshot)",
    ["how"],
    registry=REGISTRY,
)
# Per worker (labelled with its pid): a summed histogram would hide which worker stalls.
_LAG_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015)
_LAG_BUCKETS += (0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 2, 5)
LOOP_LAG = Histogram(
    "paylive_loop_lag_seconds",
    "How late the worker's periodic loop-lag timer ran: the time its event loop was held",
    ["worker"],
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)
LOOP_LAG_OWN = Histogram(
    "paylive_loop_lag_own_seconds",
    "The loop lag less the time the worker waited for a core meanwhile (Linux)",
    ["worker"],
    buckets=_LAG_BUCKETS,
    registry=REGISTRY,
)
GC_PAUSE = Histogram(
    "paylive_gc_pause_seconds",
    "Garbage collections and how long each held the worker, by generation",
    ["worker", "generation"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2),
    registry=REGISTRY,
)
ENGINE_ERRORS = Counter(
    "paylive_engine_unavailable_total",
    "Requests answered 503 because the engine was down",
    registry=REGISTRY,
)

# The outbox. Pending counts and the oldest age are global (read from the engine by
# every worker), so with --workers the most recent reading is the answer, not a sum.
EFFECTS_PENDING = Gauge(
    "paylive_effects_pending",
    "Gateway effects decided and not yet confirmed by the provider, by kind",
    ["kind"],
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
EFFECT_ATTEMPTS = Counter(
    "paylive_effect_attempts_total",
    "Calls to the provider for outbox effects, by kind and outcome (ok or failed)",
    ["kind", "outcome"],
    registry=REGISTRY,
)
EFFECT_AGE = Gauge(
    "paylive_effect_age_seconds",
    "Age of the oldest effect still pending (0 when none is)",
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)


DELIVERIES_PENDING = Gauge(
    "paylive_deliveries_pending",
    "Merchant events in the outbox: not yet listed in the events log, or not yet "
    "accepted by the shop's webhook (nor given up)",
    registry=REGISTRY,
    multiprocess_mode="livemostrecent",
)
WEBHOOK_ATTEMPTS = Counter(
    "paylive_webhook_attempts_total",
    "Merchant webhooks posted to the shop, by outcome (ok or failed)",
    ["outcome"],
    registry=REGISTRY,
)

# The archive's follower, per worker: with --workers, failing if any live worker's is.
ARCHIVE_FAILING = Gauge(
    "paylive_archive_failing",
    "1 while the archive's writes fail (PostgreSQL unreachable or refusing them: the "
    "engine keeps what the archive has not taken), else 0",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
ARCHIVE_ERRORS = Counter(
    "paylive_archive_errors_total",
    "Tries of the archive's follower that failed, by SQLSTATE class (its first two "
    "characters; none when PostgreSQL gave none: unreachable, timed out)",
    ["sqlstate_class"],
    registry=REGISTRY,
)


def archive_failed(sqlstate: str | None) -> None:
    ARCHIVE_FAILING.set(1)
    ARCHIVE_ERRORS.labels(sqlstate[:2] if sqlstate else "none").inc()


def archive_writing() -> None:
    ARCHIVE_FAILING.set(0)


def webhook_attempt(outcome: str) -> None:
    WEBHOOK_ATTEMPTS.labels(outcome).inc()


def effect_attempt(kind: str, outcome: str) -> None:
    EFFECT_ATTEMPTS.labels(kind, outcome).inc()


def observe_outbox(counters: Mapping[str, int], oldest: int | None, now: int) -> None:
    """Set the outbox gauges from the engine's counters and its oldest pending effect."""
    for kind in KINDS:
        EFFECTS_PENDING.labels(kind).set(max(0, counters.get(f"effects_pending:{kind}", 0)))
    EFFECT_AGE.set(0 if oldest is None else max(0, now - oldest) / 1000)
    DELIVERIES_PENDING.set(max(0, counters.get("deliveries_pending", 0)))


def observe_events(decision: Decision, delta: Mapping[str, int]) -> None:
    """Count what one saved decision did; interruptions come from the summary deltas so
    that an attempt ending the session (say, a third timeout) is counted too."""
    for event in decision.events:
        EVENTS_PUBLISHED.labels(event.type).inc()
        if event.type != "state":
            continue
        cause = event.data["cause"]
        if cause == "late_success":
            LATE_SUCCESSES.inc()
        elif cause in ("late_success_refunded", "duplicate_charge_refunded"):
            REFUNDS.labels(cause).inc()
    for name, value in delta.items():
        if name.startswith("interruptions:") and value > 0:
            INTERRUPTIONS.labels(name.partition(":")[2]).inc(value)


_delivered_by_type: dict[str, Counter] = {}


def delivered(kind: str) -> None:
    """Count one socket write; the labelled child is looked up once per type, since this
    runs for every message on every socket."""
    child = _delivered_by_type.get(kind)
    if child is None:
        child = _delivered_by_type[kind] = EVENTS_DELIVERED.labels(kind)
    child.inc()


_http_children: dict[tuple[str, str, int], Histogram] = {}


def method_label(method: str) -> str:
    """A client's HTTP method as a label or a name: one of the usual seven, or ``other``."""
    return method if method in _METHODS else "other"


def http_request(method: str, route: str, status: int, seconds: float) -> None:
    key = (method_label(method), route, status)
    child = _http_children.get(key)
    if child is None:
        child = _http_children[key] = HTTP_DURATION.labels(key[0], route, str(status))
    child.observe(seconds)


def socket_command(kind: str, seconds: float) -> None:
    SOCKET_COMMANDS.labels(kind).observe(seconds)


def _workers(directory: str) -> tuple[list[int], list[int]]:
    """The process ids with files in the multiprocess directory: those still running,
    and those that are not."""
    pids: set[int] = set()
    for name in os.listdir(directory):
        stem = name.rpartition(".")[0]
        tail = stem.rpartition("_")[2]
        if tail.isdigit():
            pids.add(int(tail))
    alive, dead = [], []
    for pid in sorted(pids):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(pid)
            continue
        except PermissionError:
            pass
        alive.append(pid)
    return alive, dead


def _live_workers(directory: str) -> list[int]:
    return _workers(directory)[0]


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


class WorkerProcesses(Collector):
    """``process_*`` of every live worker, labelled with its process id."""

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def collect(self) -> Iterable[Metric]:
        families: dict[str, Metric] = {}
        for pid in _live_workers(self._directory):
            reader = ProcessCollector(pid=_constant(pid), registry=None)
            for metric in reader.collect():
                family = families.get(metric.name)
                if family is None:
                    family = families[metric.name] = Metric(
                        metric.name, metric.documentation, metric.type
                    )
                for sample in metric.samples:
                    family.add_sample(
                        sample.name, {**sample.labels, "worker": str(pid)}, sample.value
                    )
        return list(families.values())


def render() -> bytes:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import multiprocess

        # The client library sums a "live" gauge's files until someone says the process
        # is dead; nobody else does. A worker killed (out of memory, a hung one killed
        # by the supervisor) would keep its sockets and commands in flight in the sums
        # for ever, and its bound listed. Its counters and histograms stay: they count
        # what happened.
        for pid in _workers(directory)[1]:
            multiprocess.mark_process_dead(pid, directory)
        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        merged.register(WorkerProcesses(directory))
        return generate_latest(merged)
    return generate_latest(REGISTRY)
