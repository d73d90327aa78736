"""Which Redis client runs the commands, and what its failures mean.

On one node, the commands of every state change (its script, and a read of a session
this worker did not save last) go on one shared connection, pipelined across tasks
(``Pipe``, pipe.py), with the same timeout. The rest (listings, probes, counters) use a
``LeanPool`` of ``redis_pool_size`` connections (redis-py 8 raises
"Too many connections" on its default pool instead of waiting, and its blocking pool
costs about a twentieth of a worker's CPU at 500 changes/s, see the class) with connect,
read and pool-wait timeouts of ``redis_timeout_ms``, and no automatic retries (a
retried compare-and-set could report a save it made as lost). Every connection failure,
timeout, loading or cluster-down error becomes ``EngineUnavailable`` so that the API
answers 503 within 1-2 s.

``redis.asyncio.cluster.RedisCluster`` runs the commands when the URL says
``?cluster=1``, or when ``detect_cluster`` finds ``cluster_enabled:1`` and the URL
does not say ``?cluster=0``. Its per-node pools do not wait, so a semaphore of
``redis_pool_size`` bounds the operations in flight instead. Its slot map and command
table are read once, by ``cluster_map``, before the first operation: redis-py routes a
command by its keys before it initializes itself, and the sharded subscription reads
the map on its own, so a client whose map came that way parsed keys without its
command table and failed every such command with an AttributeError.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
import redis
from redis import exceptions as rexc
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ...settings import RedisSettings
from ..base import EngineUnavailable
from .pipe import Pipe
from .scripts import Script

log = logging.getLogger(__name__)

# Errors that mean "Redis cannot answer right now", not "the request was wrong".
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    rexc.ConnectionError,  # also BusyLoadingError, MaxConnectionsError, pool timeouts
    rexc.TimeoutError,
    rexc.ClusterDownError,  # also MasterDownError
    rexc.TryAgainError,
    rexc.ReadOnlyError,  # a failover demoted the node we write to
    rexc.OutOfMemoryError,
    rexc.RedisClusterException,  # no node reachable, slots not covered
    TimeoutError,
    OSError,
)
# Where redis-py's own code is: an exception raised there that is not one of its errors
# is a fault of the client library, not of the request.
_REDIS_PY = os.path.dirname(redis.__file__) + os.sep
TRANSIENT_REPLIES = ("BUSY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS")


# A subscription connection: it waits for messages (no read timeout), the probe checks
# it end to end (no health checks), messages come as plain arrays (RESP2, not pushes).
_SUBSCRIBER: dict[str, Any] = {
    "socket_timeout": None,
    "retry": Retry(NoBackoff(), 0),
    "health_check_interval": 0,
    "protocol": 2,
}


def split_url(url: str) -> tuple[str, bool | None]:
    """Remove our own ``cluster`` query flag, which redis-py would not understand."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flag: bool | None = None
    kept = []
    for name, value in query:
        if name == "cluster":
            flag = value.strip().lower() in ("1", "true", "yes", "on")
        else:
            kept.append((name, value))
    return urlunsplit(parts._replace(query=urlencode(kept))), flag


def unavailable(exc: BaseException) -> EngineUnavailable:
    return EngineUnavailable(f"Redis is unavailable: {type(exc).__name__}: {exc}")


def _raised_by_redis_py(exc: BaseException) -> bool:
    """Whether ``exc`` was raised inside redis-py (its innermost frame is there)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code.co_filename.startswith(_REDIS_PY)


class LeanPool(ConnectionPool):
    """A pool of at most ``max_connections`` that waits up to ``timeout`` for one, as
    redis-py's ``BlockingConnectionPool`` does, in a few lines of its cost.

    redis-py 8's blocking pool takes a condition, a lock and a timeout, records its
    observability counters (awaited) and runs ``connect`` through the retry object
    for every command, even on a connection that is up: about 5 % of the samples of
    both Redis workers at 500 changes/s (py-spy), for two or three commands a change. Here a
    free connection is taken and given back without awaiting anything; a connection
    is checked exactly as the blocking pool checks it (``can_read``: the server closed
    it, or a reply was left unread) and made anew when it fails the check. Waiters
    are woken in the order they came (a command that finds a connection free takes
    it at once)."""

    def __init__(self, timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timeout = timeout
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def get_connection(self, *_args: Any, **_options: Any) -> AbstractConnection:
        if not self.can_get_connection():
            await self._wait()
        connection: AbstractConnection = self.get_available_connection()
        try:
            await _ready(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def _wait(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.timeout):
                while not self.can_get_connection():
                    waiter: asyncio.Future[None] = loop.create_future()
                    self._waiters.append(waiter)
                    try:
                        await waiter
                    except BaseException:
                        if waiter.done() and not waiter.cancelled():
                            self._wake()  # woken, and leaving: the next waiter's turn
                        else:
                            waiter.cancel()
                        raise
        except TimeoutError as exc:
            raise rexc.ConnectionError("No connection available.") from exc

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def release(self, connection: AbstractConnection) -> None:
        self._in_use_connections.discard(connection)
        try:
            if connection.should_reconnect():
                await connection.disconnect()
        except BaseException:
            connection._force_disconnect()  # not known to be closed: reuse reconnects
            raise
        finally:
            self._available_connections.append(connection)
            self._wake()


async def _ready(connection: AbstractConnection) -> None:
    """``connection`` up and with nothing left to read, as ``ensure_connection`` makes
    it, without going through ``connect`` when it is up already."""
    if connection.is_connected:
        try:
            if not await connection.can_read():
                return
        except (rexc.ConnectionError, rexc.TimeoutError, OSError):
            pass
        await connection.disconnect()
    await connection.connect()
    if await connection.can_read():
        raise rexc.ConnectionError("Connection not ready")


class Client:
    """The command client (single node or Cluster) with bounded, mapped operations."""

    def __init__(self, url: str, settings: RedisSettings) -> None:
        self.url, self._cluster_flag = split_url(url)
        self._max_connections = settings.redis_pool_size
        self.timeout = settings.redis_timeout_ms / 1000
        self._tcp = not self.url.startswith("unix://")
        self.r: Redis | RedisCluster
        self._pool: LeanPool | None = None
        self._pipe: Pipe | None = None
        self._gate: asyncio.Semaphore | None = None
        self._mapped = False  # Cluster: ``cluster_map`` has run
        if self._cluster_flag:
            self._use_cluster()
        else:
            self._use_single()

    def _use_single(self) -> None:
        extra: dict[str, Any] = {"socket_keepalive": True} if self._tcp else {}
        self._pool = LeanPool.from_url(
            self.url,
            max_connections=self._max_connections,
            timeout=self.timeout,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            # RESP2: redis-py 8 defaults to RESP3, which turns on "maintenance
            # notifications" and with them skips the pool's check for connections the
            # server closed, so the first command after a Redis restart would fail.
            protocol=2,
            **extra,
        )
        self.r = Redis.from_pool(self._pool)
        pool = self._pool
        self._pipe = Pipe(lambda: pool.connection_class(**pool.connection_kwargs), self.timeout)
        self._gate = None

    def _use_cluster(self) -> None:
        self.r = RedisCluster.from_url(
            self.url,
            max_connections=self._max_connections,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            protocol=2,  # as for one node
        )
        self._pool = None
        self._pipe = None
        self._mapped = False
        # The cluster's per-node pools raise instead of waiting when full.
        self._gate = asyncio.Semaphore(self._max_connections)

    @property
    def cluster(self) -> bool:
        """True when commands go through the Redis Cluster client."""
        return isinstance(self.r, RedisCluster)

    async def detect_cluster(self) -> None:
        """Switch to the Cluster client if the URL did not say and the server is one."""
        if self._cluster_flag is not None:
            return
        try:
            async with self.op(), asyncio.timeout(self.timeout):
                info = await self.r.info("cluster")
        except (EngineUnavailable, rexc.ResponseError) as exc:
            log.warning("could not ask Redis whether it is a cluster: %s", exc)
            return
        if info.get("cluster_enabled") and not self.cluster:
            await self.close()
            self._use_cluster()

    async def cluster_map(self) -> RedisCluster:
        """The Cluster client, initialized: slot map and command table read.

        Everything that needs the map (an operation, readiness, the sharded
        subscription) comes here first. redis-py only initializes itself inside a
        command's attempt, after it has routed the command by its keys; and the sharded
        subscription's ``nodes_manager.initialize()`` reads the map without the
        command table, after which redis-py takes itself for initialized enough to
        route by keys it cannot parse. ``initialize`` is a no-op once done, and its
        lock makes concurrent first callers wait for the one that reads.
        """
        r = self.r
        assert isinstance(r, RedisCluster)
        if not self._mapped:
            await r.initialize()
            self._mapped = True
        return r

    async def close(self) -> None:
        if self._pipe is not None:
            await self._pipe.close()
        self._mapped = False  # redis-py drops its map on aclose
        await self.r.aclose()

    @contextlib.asynccontextmanager
    async def op(self) -> AsyncIterator[None]:
        """One engine operation: bounded in concurrency, failures mapped to EngineUnavailable."""
        try:
            gate = self._gate
            if gate is None:
                yield
            else:
                async with asyncio.timeout(self.timeout):
                    await gate.acquire()
                try:
                    if not self._mapped:
                        async with asyncio.timeout(self.timeout):
                            await self.cluster_map()
                    yield
                finally:
                    gate.release()
        except EngineUnavailable:
            raise
        except _UNAVAILABLE as exc:
            raise unavailable(exc) from exc
        except rexc.ResponseError as exc:
            if str(exc).startswith(TRANSIENT_REPLIES):
                raise unavailable(exc) from exc
            raise
        except Exception as exc:
            # A fault inside redis-py (an AttributeError of a half-initialized
            # client, once): the command cannot be run now, which is a 503 and a
            # retry, not a 500. Our own faults are not masked: their frame is ours.
            if not _raised_by_redis_py(exc):
                raise
            log.error("redis-py failed inside a command: taken as Redis unavailable", exc_info=True)
            raise unavailable(exc) from exc

    async def call(self, *args: Any) -> Any:
        """One command whose reply needs no parsing (a script, HGET): on one node, on
        the worker's shared connection (``Pipe``), where the commands of a turn go out
        in one write; on Cluster, through the client, which routes it. redis-py's
        client wraps every command in its retry object and its operation metrics,
        about a third of the client's CPU for a script on a loopback connection (95
        against 70 us a call, measured), and this runs two or three times per state
        change; nothing else differs from ``execute_command`` with no retries."""
        pipe = self._pipe
        if pipe is None:
            return await self.r.execute_command(*args)
        return await pipe.call(hiredis.pack_command(args))

    async def eval(self, script: Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        if self._pool is None:
            try:
                return await self.r.evalsha(script.sha, len(keys), *keys, *args)
            except rexc.NoScriptError:
                return await self.r.eval(script.source, len(keys), *keys, *args)
        try:
            return await self.call("EVALSHA", script.sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            # First use on this server (or after a restart): EVAL also caches it.
            return await self.call("EVAL", script.source, len(keys), *keys, *args)

    def node_connection(self, host: str, port: int) -> AbstractConnection:
        """A new subscription connection to one Cluster node (sharded pub/sub)."""
        assert isinstance(self.r, RedisCluster)
        node = self.r.get_node(host=host, port=port)
        if node is None:
            raise rexc.ConnectionError(f"no cluster node {host}:{port}")
        return node.connection_class(**{**node.connection_kwargs, **_SUBSCRIBER})

    def subscriber_connection(self, attempt: int) -> AbstractConnection:
        """A new connection for the subscription, outside the command pool.

        On Cluster, ``attempt`` (the failures so far) moves it along the known nodes,
        in case one is lost.
        """
        overrides: dict[str, Any] = {**_SUBSCRIBER, "socket_connect_timeout": self.timeout}
        if self._pool is not None:
            kwargs = {**self._pool.connection_kwargs, **overrides}
            return self._pool.connection_class(**kwargs)
        assert isinstance(self.r, RedisCluster)
        nodes = self.r.get_nodes()
        if nodes:
            node = nodes[attempt % len(nodes)]
            return node.connection_class(**{**node.connection_kwargs, **overrides})
        kwargs = dict(parse_url(self.url))
        kwargs.pop("connection_class", None)
        return Connection(**{**kwargs, **overrides})
