"""One worker's moving parts and its loops: timers, effects, countdowns, summary and,
with an archive, the archive and its housekeeping.

One loop each per worker, never a task per session or per socket: the timer loop
claims due deadlines and expiries from the engine (any worker may fire one, the
lease makes it exactly one), the effect loop claims sessions whose outbox has an
item due the same way (gateway effects, then merchant events to list and deliver),
the countdown loop ticks every processing session that has sockets here, the summary
loop feeds the admin dashboards and the outbox gauges, and the archive loop follows
the events log into PostgreSQL (service/retention.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from . import metrics
from .archive import ArchiveUnavailable, open_archive
from .core import stats
from .core.codec import Encoded, Message
from .core.protocol import CloseCode
from .engine import Engine, EngineUnavailable, create_engine
from .errors import Refused
from .fanout.hub import Hub
from .gateway import Gateway, create_gateway
from .limits.admission import Admission
from .limits.buckets import TokenBuckets
from .service.audit import AuditTrail
from .service.deliveries import Deliveries
from .service.effects import EffectRunner
from .service.idempotency import IdempotencyKeys
from .service.payments import PaymentService, now_ms
from .service.readiness import WriteProbe
from .service.reads import Reads
from .service.retention import Retention
from .service.tickets import TicketUses
from .service.webhooks import WebhookSender
from .settings import Settings

log = logging.getLogger("paylive.runtime")

# How often the events log is trimmed and the archive purged.
HOUSEKEEPING_MS = 10_000
# The countdown loop's shortest period: one slice of the sessions each tick.
COUNTDOWN_TICK_MS = 20
# How long a stop waits for the worker's loops to end once cancelled: a loop step is
# a few engine calls, each bounded by the engine's own timeout.
STOP_WAIT_S = 5.0


class Runtime:
    def __init__(
        self,
        settings: Settings,
        engine: Engine | None = None,
        gateway: Gateway | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.engine = engine or create_engine(settings)
        self.gateway = gateway or create_gateway(settings, self.engine)
        self.service = PaymentService(settings.service, self.engine, self.gateway, clock)
        self.archive = open_archive(settings.database_url) if settings.database_url else None
        self.retention = Retention(settings.archive, self.engine, self.archive, clock)
        self.audit = AuditTrail(self.engine, self.archive)
        sender = None
        if settings.merchant_webhook_url:
            sender = WebhookSender(
                settings.merchant_webhook_url,
                settings.merchant_webhook_secrets,
                settings.merchant_webhook_timeout_ms / 1000,
            )
        self.deliveries = Deliveries(self.service, sender, self.archive is not None)
        self.effects = EffectRunner(self.service, self.deliveries)
        self.reads = Reads(settings.reads, self.engine, clock, self.archive)
        self.tickets = TicketUses(self.engine)
        self.write_probe = WriteProbe(self.engine, settings.ready_cache_ms)
        self.idempotency = IdempotencyKeys(self.engine, settings.idempotency_ttl_ms)
        self.limiter = TokenBuckets(settings.command_burst, settings.command_rate_per_s)
        self.demo_limiter = TokenBuckets(settings.demo_per_minute, settings.demo_per_minute / 60)
        self.admission = Admission.of(settings.admission)
        self._loops: list[asyncio.Task[None]] = []
        self._ticks: set[asyncio.Task[None]] = set()
        self._tick_slots = asyncio.Semaphore(settings.timer_concurrency)
        # Effects have slots of their own: a provider in an outage that answers slowly
        # must not hold up deadlines.
        self._effect_slots = asyncio.Semaphore(settings.effect_concurrency)
        # Draining (SIGTERM): new sockets are refused and readiness fails, while the
        # sockets held are closed over the window; the loops go on until it ends.
        self.draining = False
        self.shutting_down = False
        # Countdowns go out in slices 20 ms apart, each session once per interval on
        # its own phase (its slice): at 5,000 sockets one burst a second cost 100 ms of
        # p99 latency, and ten slices still held a worker's loop for each tenth of
        # the processing sockets at once (about 250 sends, 10 ms and more) every 100 ms.
        self._slices = max(
            1, min(settings.countdown_slices, settings.countdown_interval_ms // COUNTDOWN_TICK_MS)
        )
        self._slice = 0
        self.hub = Hub(
            self.engine,
            self.reads.admin_snapshot,
            clock,
            settings.resync_batch,
            settings.resync_pause_ms,
            self._slices,
        )

    async def start(self) -> None:
        await self.engine.start()
        self._loops = [
            asyncio.create_task(self._every(self.settings.timer_poll_ms, self._fire_timers)),
            asyncio.create_task(self._every(self.settings.effect_poll_ms, self._fire_effects)),
            asyncio.create_task(
                self._every(
                    self.settings.countdown_interval_ms // self._slices,
                    self._countdowns,
                    until=self.hub.occupied,
                )
            ),
            asyncio.create_task(self._every(self.settings.summary_interval_ms, self._summary)),
            asyncio.create_task(self._every(HOUSEKEEPING_MS, self.retention.housekeeping)),
        ]
        if self.archive is not None:
            await self.archive.start()
            self._loops.append(
                asyncio.create_task(
                    self._every(self.settings.archive_poll_ms, self.retention.follow)
                )
            )
            self._loops.append(
                asyncio.create_task(self._every(HOUSEKEEPING_MS, self.audit.catch_up))
            )

    async def stop(self) -> None:
        self.shutting_down = True
        stuck: set[asyncio.Task[None]] = set()
        tasks = self._loops + list(self._ticks)
        for task in tasks:
            task.cancel()
        if tasks:
            done, stuck = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    log.warning("a worker loop ended with %r", task.exception())
            if stuck:
                log.warning("%d worker loops did not stop within %s s", len(stuck), STOP_WAIT_S)
        await self.deliveries.close()
        await self.gateway.close()
        if self.archive is not None:
            await self.archive.close()
        await self.engine.close()
        # Said, so that an operator (and the drain tests) can tell a stop that ended
        # here from one cut off by the process's exit.
        if stuck:
            log.info("worker stopped: engine closed, %d loops left to the exit", len(stuck))
        else:
            log.info("worker stopped: loops ended, engine closed")

    async def drain(self, forced: Callable[[], bool] = lambda: False) -> None:
        """Graceful shutdown (docs/protocol.md section 4.3): refuse new sockets, then
        close the ones held a slice at a time over ``drain_ms`` with 1012 and a
        reconnect hint, so that they come back to the other workers spread out.
        ``forced`` (a second signal) closes the rest at once. With no window, every
        socket is told 1001 at once, as section 4 first said."""
        self.draining = True
        window_ms = self.settings.drain_ms
        if window_ms <= 0:
            self.hub.close_all(CloseCode.GOING_AWAY, "server shutting down: reconnect")
        else:
            began = time.monotonic()
            held = await self.hub.drain(
                window_ms / 1000, CloseCode.SERVICE_RESTART, self.restart_reason, forced
            )
            took_ms = round((time.monotonic() - began) * 1000)
            if forced():
                # Told apart in the log: an operator reading it after a forced stop must
                # not think the sockets were spread over the whole window.
                log.info("closed %d sockets in %d ms, the rest at once on a second signal",
                         held, took_ms)  # fmt: skip
            else:
                log.info("drained %d sockets in %d ms (window %d ms)", held, took_ms, window_ms)
        self.shutting_down = True

    @property
    def restart_reason(self) -> str:
        """The close reason of a drain: a client reconnects after a random delay up to
        ``reconnect_within_ms`` (docs/protocol.md section 4.3)."""
        return f"restarting; reconnect_within_ms={self.settings.drain_hint_ms}"

    async def readiness(self) -> dict[str, bool]:
        """/readyz: the engine answers and takes writes (asked at most once per
        ``ready_cache_ms``, service/readiness.py), the subscription is up, the worker is
        not stopping (nor draining) and not overloaded (every command place taken: the
        next would be refused)."""
        writable = await self.write_probe.check()
        return {
            "engine": writable is not None,
            "engine_writable": bool(writable),
            "subscription": self.engine.subscription_healthy,
            "shutting_down": self.draining or self.shutting_down,
            "overloaded": self.admission.full,
        }

    def archive_status(self) -> dict[str, Any] | None:
        """/readyz's body: whether the archive's writes go through (None without an
        archive). Not a check: the engine keeps what the archive has not taken, so a
        worker whose archive fails still serves (docs/protocol.md section 6)."""
        return self.retention.status()

    async def _every(
        self,
        interval_ms: int,
        step: Callable[[], Awaitable[None]],
        until: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Run ``step`` every ``interval_ms``; with ``until``, only while it returns at
        once (the loop sleeps in it, not in a timer, while there is nothing to do)."""
        interval = interval_ms / 1000
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        next_at = loop.time()
        while True:
            if until is not None:
                # A long sleep here leaves next_at behind: the catch-up below restarts
                # the rounds from now.
                await until()
            try:
                await step()
            except (EngineUnavailable, ArchiveUnavailable):
                pass  # readiness reports it; the next round tries again
            except Exception:
                log.exception("a worker loop step failed; carrying on")
            if me is not None and me.cancelling():
                # redis-py can swallow a cancel that lands while a command waits for
                # its reply (seen on uvloop; redis-py issues 2028 and 2551): the
                # loop would run on and the stop wait for it forever.
                raise asyncio.CancelledError
            next_at += interval
            delay = next_at - loop.time()
            if delay < 0:  # fell behind: skip the missed rounds rather than burst
                next_at = loop.time()
                delay = 0
            await asyncio.sleep(delay)

    async def _start_each(
        self,
        session_ids: list[str],
        slots: asyncio.Semaphore,
        run: Callable[[str], Coroutine[Any, Any, None]],
    ) -> None:
        """Start ``run`` for each claimed session once a slot is free; ``run`` frees it."""
        for session_id in session_ids:
            await slots.acquire()
            task = asyncio.create_task(run(session_id))
            self._ticks.add(task)
            task.add_done_callback(self._ticks.discard)

    async def _fire_timers(self) -> None:
        if self.shutting_down:
            return
        due = await self.engine.claim_due(
            self.clock(), self.settings.timer_batch, self.settings.timer_lease_ms
        )
        await self._start_each(due, self._tick_slots, self._tick)

    async def _tick(self, session_id: str) -> None:
        try:
            await self.service.tick(session_id)
        except EngineUnavailable:
            pass  # the lease runs out and some worker fires it again
        except Refused as exc:
            # Say, the provider cannot confirm the void an expiry needs: it fires again
            # after its lease, and nothing changed meanwhile.
            log.warning("timer for %s fires again later: %s", session_id, exc.message)
        except Exception:
            log.exception("timer for %s failed; it fires again after its lease", session_id)
        finally:
            self._tick_slots.release()

    async def _fire_effects(self) -> None:
        if self.shutting_down:
            return
        due = await self.engine.claim_effects(
            self.clock(), self.settings.effect_batch, self.settings.outbox_lease_ms
        )
        await self._start_each(due, self._effect_slots, self._run_effects)

    async def _run_effects(self, session_id: str) -> None:
        held = True

        def release() -> None:
            # Once the provider's part is done: webhooks have slots of their own.
            nonlocal held
            if held:
                held = False
                self._effect_slots.release()

        try:
            await self.effects.run_due(session_id, release)
        except EngineUnavailable:
            pass  # the lease runs out and some worker tries again, under the same keys
        except Exception:
            log.exception("outbox of %s failed; tried again after its lease", session_id)
        finally:
            release()

    async def _countdowns(self) -> None:
        self.hub.countdown_sweep(self.clock(), self._slice)
        self._slice = (self._slice + 1) % self._slices

    async def _summary(self) -> None:
        counters = await self.engine.counters()
        now = self.clock()
        stale = stats.stale_minutes(counters, now)
        if stale:
            # The chart's minutes past its hour: whichever worker sees them first.
            await self.engine.forget_counters(stale)
        metrics.observe_outbox(counters, await self.engine.oldest_pending_effect(), now)
        if not self.hub.admins:
            return
        summary = stats.summary(counters)
        self.hub.broadcast_admin(Encoded.of(Message("summary", summary, None, None, now)))


async def engine_writable(settings: Settings) -> bool:
    """Whether the engine ``serve`` would open takes a write, asked as ``/readyz`` asks
    it (``Engine.writable``), for ``paylive check``: a Redis replica answers PING and
    refuses every save. Raises ``EngineUnavailable`` when the engine does not answer.

    Here, not in the check, because the edge never calls the engine itself; the engine
    is started so that a Cluster the URL does not name is found as a worker finds it."""
    engine = create_engine(settings)
    await engine.start()
    try:
        return await engine.writable()
    finally:
        await engine.close()
