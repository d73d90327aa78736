"""Sharded pub/sub on Redis Cluster: one subscription per primary node.

Plain PUBLISH on Cluster is broadcast over the cluster bus to every node, so every
node pays for every message whoever listens. SPUBLISH stays on the node that serves
the channel's slot (and its replicas): a session's channel shares the session's hash
tag, so the save script publishes it on the node it already runs on, and the admin
channel lives in the global slot, where the second step of a save runs. Fan-out
then grows with the nodes instead of every node carrying all of it.

The price is on the subscribing side: SSUBSCRIBE must reach the node that serves the
channel's slot. This holds one ``Subscription`` (with its own connection, probe and
backoff) per primary, routes each channel to the one of its slot, and, when a node's
subscription is lost (a slot moved, ``sunsubscribe``; a node failed over), refreshes
the cluster's slot map and routes every channel again before that subscription
reconnects. Each node's subscription calls ``on_resync`` after it is back, so the
sessions catch up from their histories as with one subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import SlotNotCoveredError

from ...settings import RedisSettings
from ..base import EventListener
from . import keys
from .client import Client
from .subscription import Subscription

log = logging.getLogger(__name__)

# How many hash tags are tried for a node's home channel (each is one slot: a node
# with any slot at all has one among the first few hundred).
HOME_TAGS = 10_000
# How often the supervisor looks while a node's subscription is not up yet.
WAIT_S = 0.05


class ShardedSubscription:
    """The ``Subscription`` interface the engine uses, over one per primary node."""

    def __init__(
        self,
        client: Client,
        settings: RedisSettings,
        on_event: EventListener,
        on_resync: Callable[[], None],
    ) -> None:
        self._client = client
        self._settings = settings
        self._on_event = on_event
        self._on_resync = on_resync
        self._nodes: dict[str, Subscription] = {}  # "host:port" -> its subscription
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._channels: dict[bytes, str | None] = {}
        self._check = settings.redis_probe_interval_ms / 1000
        self.ready = asyncio.Event()
        self.closed = False

    @property
    def healthy(self) -> bool:
        return bool(self._nodes) and all(s.healthy for s in self._nodes.values())

    @property
    def nodes(self) -> int:
        """Primaries subscribed to (one connection each)."""
        return len(self._nodes)

    def _cluster(self) -> RedisCluster:
        r = self._client.r
        assert isinstance(r, RedisCluster)
        return r

    def _node_of(self, channel: bytes) -> str:
        try:
            node = self._cluster().get_node_from_key(channel)  # type: ignore[arg-type]
        except SlotNotCoveredError as exc:
            raise LookupError(f"no node serves {channel!r}") from exc
        if node is None:
            raise LookupError(f"no node serves {channel!r}")
        return str(node.name)

    # The API ---------------------------------------------------------------------

    async def subscribe(self, session_id: str | None) -> None:
        channel = keys.channel(session_id, sharded=True)
        self._channels[channel] = session_id
        try:
            sub = self._nodes.get(self._node_of(channel))
        except LookupError:
            return  # the slot map is being refreshed: the next check routes it
        if sub is not None:
            await sub.add(channel, session_id)
        # Else the node is new: the next check starts its subscription with it.

    async def unsubscribe(self, session_id: str | None) -> None:
        channel = keys.channel(session_id, sharded=True)
        self._channels.pop(channel, None)
        for sub in self._nodes.values():
            if channel in sub.channels():
                await sub.remove(channel)

    # The supervisor ----------------------------------------------------------------

    async def supervise(self) -> None:
        """Keep a subscription on every primary; re-route after any of them is lost."""
        loop = asyncio.get_running_loop()
        try:
            await self._reroute(refresh=False)
            rerouted = loop.time()
            while not self.closed:
                if self._nodes and all(s.ready.is_set() for s in self._nodes.values()):
                    self.ready.set()
                    await asyncio.sleep(self._check)
                else:
                    self.ready.clear()
                    await asyncio.sleep(WAIT_S)  # a node is (re)connecting: look soon
                if not self.healthy and loop.time() - rerouted >= self._check:
                    await self._reroute(refresh=True)
                    rerouted = loop.time()
        finally:
            for task in self._tasks.values():
                task.cancel()
            if self._tasks:
                await asyncio.wait(set(self._tasks.values()))
            self._tasks.clear()
            self._nodes.clear()

    async def _reroute(self, refresh: bool) -> None:
        """Read the slot map again (``refresh``), start a subscription for each primary
        that has none, and give every channel to the node that serves it now."""
        try:
            # The client's own initialization first (see ``Client.cluster_map``): a
            # map read by the nodes manager alone leaves redis-py unable to route.
            r = await self._client.cluster_map()
            if refresh:
                await r.nodes_manager.initialize()
        except Exception as exc:  # noqa: BLE001 - the cluster is down: try later
            log.debug("could not refresh the cluster's slot map: %r", exc)
            return
        primaries = {str(n.name): n for n in r.get_primaries()}
        for name in list(self._nodes):
            if name not in primaries:  # no longer a primary: its channels move
                self._tasks.pop(name).cancel()
                del self._nodes[name]
        for name, node in primaries.items():
            if name not in self._nodes:
                self._start(name, node.host, int(node.port))
        wanted: dict[str, dict[bytes, str | None]] = {name: {} for name in self._nodes}
        for channel, session_id in self._channels.items():
            with contextlib.suppress(LookupError, KeyError):
                wanted[self._node_of(channel)][channel] = session_id
        for name, sub in self._nodes.items():
            held = sub.channels()
            for channel in held.keys() - wanted[name].keys():
                await sub.remove(channel)
            for channel in wanted[name].keys() - held.keys():
                await sub.add(channel, wanted[name][channel])

    def _start(self, name: str, host: str, port: int) -> None:
        sub = Subscription(
            self._client,
            self._settings,
            self._on_event,
            self._on_resync,
            connect=lambda _attempt: self._client.node_connection(host, port),
            sharded=True,
            home_tag=self._home_tag(name),
        )
        self._nodes[name] = sub
        self._tasks[name] = asyncio.create_task(sub.supervise(), name=f"paylive-redis-shard-{name}")

    def _home_tag(self, name: str) -> str | None:
        """A hash tag whose slot this node serves, for its subscription's home channel."""
        slots: Any = self._cluster().nodes_manager.slots_cache
        for i in range(HOME_TAGS):
            tag = f"home{i}"
            holders = slots.get(key_slot(tag.encode()))
            if holders and str(holders[0].name) == name:
                return tag
        return None
