"""``RedisEngine``: the storage, the client and the subscription put together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence

from redis import exceptions as rexc

from ...core.session import Session
from ...settings import RedisSettings
from ..base import AuditAdd, Claim, Engine, RecordClaim
from . import keys
from .client import TRANSIENT_REPLIES, Client, unavailable
from .sharded import ShardedSubscription
from .shop import Shop
from .store import Store
from .subscription import Subscription

log = logging.getLogger(__name__)

# The probe key outlives a few readiness checks, and then goes: nothing else reads it.
READY_TTL_MS = 60_000


class RedisEngine(Shop, Engine):
    """Sessions, history, timers, records and fan-out in Redis (see the package docstring).

    ``url`` is a redis://, rediss:// or unix:// URL; ``?cluster=1`` selects the Redis
    Cluster client. Its limits (pool size, timeouts, the subscription's probe and
    backoff) are fields of ``settings``, the Redis engine's part.
    """

    def __init__(self, url: str, settings: RedisSettings) -> None:
        super().__init__()
        self._client = Client(url, settings)
        self._store = Store(self._client, settings)
        self._settings = settings
        # Through methods: the hub sets the listeners after the engine is made.
        self._subscription: Subscription | ShardedSubscription = Subscription(
            self._client,
            settings,
            self._event,
            lambda: self._on_resync(),
        )
        self._task: asyncio.Task[None] | None = None
        self._asks_role = True

    def _event(self, session_id: str | None, payload: bytes) -> None:
        if session_id is not None:
            self._store.cache.observe(session_id, payload)
        self._on_event(session_id, payload)

    @property
    def cluster(self) -> bool:
        """True when commands go through the Redis Cluster client."""
        return self._client.cluster

    @property
    def sharded(self) -> bool:
        """True when events go through sharded pub/sub (Cluster, unless turned off)."""
        return self._store.sharded

    @property
    def saves_audit(self) -> bool:
        return self._store.saves_audit

    # Lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Pick the client, start the subscription and wait (briefly) until it is live.

        Redis being down is not an error here: the engine keeps trying, and the API
        answers 503 until it is back.
        """
        if self._task is not None:
            return
        self._subscription.closed = False
        await self._client.detect_cluster()
        if self.sharded and not isinstance(self._subscription, ShardedSubscription):
            self._subscription = ShardedSubscription(
                self._client, self._settings, self._event, lambda: self._on_resync()
            )
        self._subscription.closed = False
        self._task = asyncio.create_task(
            self._subscription.supervise(), name="paylive-redis-subscription"
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * self._client.timeout):
                await self._subscription.ready.wait()

    async def close(self) -> None:
        self._subscription.closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        await self._client.close()

    async def ping(self) -> None:
        client = self._client
        async with client.op(), asyncio.timeout(client.timeout):
            await client.r.ping()

    async def writable(self) -> bool:
        """Whether a save would be taken now: ``/readyz`` and ``paylive check`` ask it.

        A write of paylive's own probe key, because it is refused for every reason a
        save would be (``maxmemory`` reached with no eviction, ``min-replicas-to-write``
        unmet, a failed background save, an ACL); on one node ``ROLE`` first, because a
        replica configured with ``replica-read-only no`` takes that write and would
        take the saves too, until replication overwrites them. On Cluster, a key on
        every primary that owns slots (a save goes to its own session's slot), all at
        once within the one timeout; a Cluster replica redirects writes, so no ROLE.
        """
        client = self._client
        async with client.op(), asyncio.timeout(client.timeout):
            if client.cluster:
                return await self._primaries_writable()
            if await self._replica():
                return False
            return await self._probe(keys.READY)

    async def _replica(self) -> bool:
        """Whether the node says it is a replica. A server that refuses ROLE (an ACL
        without it, a proxy) leaves the write to decide, and is not asked again."""
        if not self._asks_role:
            return False
        try:
            role = await self._client.call("ROLE")
        except rexc.ResponseError as exc:
            if str(exc).startswith(TRANSIENT_REPLIES):
                raise
            self._asks_role = False
            log.warning("Redis refused ROLE (%s): readiness tells a replica by its write", exc)
            return False
        return bytes(role[0]) in (b"slave", b"replica")

    async def _primaries_writable(self) -> bool:
        # The slot map is read here, so the client must have it (``op`` saw to it).
        r = await self._client.cluster_map()
        slots = r.nodes_manager.slots_cache

        def owner(slot: int) -> str | None:
            nodes = slots.get(slot)
            return str(nodes[0].name) if nodes else None

        probes = keys.ready_keys(owner, {str(node.name) for node in r.get_primaries()})
        answers = await asyncio.gather(*(self._probe(key) for key in probes.values()))
        return all(answers)

    async def _probe(self, key: str) -> bool:
        try:
            await self._client.call("SET", key, b"1", "PX", READY_TTL_MS)
        except (rexc.MovedError, rexc.AskError) as exc:
            # The slot moved since the map was read: a reshard, not a refusal.
            raise unavailable(exc) from exc
        except rexc.ResponseError as exc:
            # NOREPLICAS is an answer: the node is up and refuses the write.
            if str(exc).startswith(TRANSIENT_REPLIES) and not str(exc).startswith("NOREPLICAS"):
                raise  # a node loading or a cluster down: the engine is unavailable
            # Redis answered and refused the write: a replica, OOM, MISCONF, an ACL
            # without SET (NOPERM)... A save would be refused the same way, so not
            # writable, whichever the reason.
            return False
        return True

    @property
    def subscription_healthy(self) -> bool:
        return self._subscription.healthy

    # Sessions ---------------------------------------------------------------

    async def create(self, session: Session, stats: Mapping[str, int], notice: bytes) -> bool:
        return await self._store.create(session, stats, notice)

    async def finish_create(
        self, session: Session, stats: Mapping[str, int], notice: bytes
    ) -> None:
        await self._store.finish_create(session, stats, notice)

    async def load(self, session_id: str) -> Session | None:
        return await self._store.load(session_id)

    async def load_for_update(self, session_id: str) -> Session | None:
        return await self._store.load_for_update(session_id)

    async def save(
        self,
        session: Session,
        expected_version: int,
        events: Sequence[bytes],
        stats: Mapping[str, int],
        claims: Sequence[RecordClaim] = (),
        audit: AuditAdd | None = None,
    ) -> bool:
        return await self._store.save(session, expected_version, events, stats, claims, audit)

    async def history(self, session_id: str, since: int) -> list[bytes] | None:
        return await self._store.history(session_id, since)

    async def list_sessions(self, active_only: bool, limit: int) -> list[Session]:
        return await self._store.list_sessions(active_only, limit)

    async def counters(self) -> dict[str, int]:
        return await self._store.counters()

    async def forget_counters(self, names: Sequence[str]) -> None:
        await self._store.forget_counters(names)

    async def list_review(self, limit: int) -> list[Session]:
        return await self._store.list_review(limit)

    async def list_with_effects(self, pending_only: bool, limit: int) -> list[Session]:
        return await self._store.list_with_effects(pending_only, limit)

    async def oldest_pending_effect(self) -> int | None:
        return await self._store.oldest_pending_effect()

    # Timers -----------------------------------------------------------------

    async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[str]:
        return await self._store.claim_due(now, limit, lease_ms)

    async def schedule(self, session_id: str, due: int | None) -> None:
        await self._store.schedule(session_id, due)

    async def claim_effects(self, now: int, limit: int, lease_ms: int) -> list[str]:
        return await self._store.claim_effects(now, limit, lease_ms)

    async def schedule_effects(self, session_id: str, due: int | None) -> None:
        await self._store.schedule_effects(session_id, due)

    # Records ----------------------------------------------------------------

    async def put_if_absent(self, key: str, value: bytes, ttl_ms: int) -> bytes | None:
        return await self._store.put_if_absent(key, value, ttl_ms)

    async def claim(
        self,
        key: str,
        value: bytes,
        ttl_ms: int,
        unless: str | None = None,
        also: tuple[str, bytes] | None = None,
    ) -> Claim:
        done = await self._store.claim(key, value, ttl_ms, unless, also)
        if done is None:  # Cluster: the keys are in other slots
            return await super().claim(key, value, ttl_ms, unless, also)
        return done

    async def put(self, key: str, value: bytes, ttl_ms: int) -> None:
        await self._store.put(key, value, ttl_ms)

    async def get(self, key: str) -> bytes | None:
        return await self._store.get(key)

    async def delete(self, key: str) -> None:
        await self._store.delete(key)

    # Fan-out ----------------------------------------------------------------

    async def subscribe(self, session_id: str | None) -> None:
        await self._subscription.subscribe(session_id)

    async def unsubscribe(self, session_id: str | None) -> None:
        await self._subscription.unsubscribe(session_id)
