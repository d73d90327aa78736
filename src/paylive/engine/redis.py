"""The Redis engine: any number of workers and hosts share sessions, timers and fan-out.

Keys
----
A session's keys carry its id as a hash tag, so that one Lua script may touch them
all, also on Redis Cluster:

- ``paylive:{<id>}:s``, a hash: ``r`` the record (JSON of ``Session.to_record()``),
  ``v`` its version, ``st`` its status, ``n`` how many durable events were ever
  appended. The history then holds events ``n - LLEN + 1 .. n``, which is how
  ``history`` knows when it can no longer replay everything.
- ``paylive:{<id>}:h``, a list: the last ``history_cap`` durable events.

Both expire ``retention_after_end_ms`` after the session's last save once it is
terminal, and ``session_ttl_ms + retention_after_end_ms`` after it while it is active
(every save sets the expiry afresh). ``claim_due`` also purges ended sessions
exactly when the memory engine does (``updated_at + retention`` at the caller's
clock, read from ``paylive:{_global}:ended``); the expiry is the backstop.

The global keys share the hash tag ``{_global}`` (one slot, so one script may update
them together): ``timers`` (zset id -> due ms), ``order`` and ``active`` (zsets
id -> creation score, newest last), ``ended`` (zset id -> purge time), ``counters``
(hash) and ``tver`` (hash id -> version of the last timer write). Records of
``put``/``get`` are plain strings ``paylive:rec:<key>`` with their own expiry.

One save
--------
On a single Redis (not Cluster) every key lives on one server, so ``save`` is one
script, ``_SAVE_ONE_NODE``, that does everything below atomically in one round trip:
nothing of the two-step trade-off applies there. On Cluster, ``save`` is one Lua
script on the session's slot: compare the version, store the
record, append the events to the capped history and PUBLISH each of them on the
session channel and the admin channel. No event is published for a state that was
not stored, and none stored without being published. The global keys live in another
slot (on Cluster, perhaps another node), so a second script updates them right after
a successful compare-and-set: counters, the active index, the purge time, and the
timer. That second step is not atomic with the first, and this is the trade-off:

- The timer is only a hint, because firing is idempotent (a tick for a session that
  moved on does nothing). To lose no deadline if the worker dies between the two
  steps, the new due time is written *before* the compare-and-set with ``ZADD LT``:
  it can only move the timer earlier, and a spurious early tick is harmless. So a
  save that loses the compare-and-set may still leave an earlier timer behind: the
  one way in which it is not "nothing changed" (the memory engine has no such tick).
- The exact timer write after the compare-and-set is guarded by the session version
  (``tver``), so that two workers' writes arriving out of order cannot leave a stale
  later due time in place of an earlier one.
- A worker that dies between the two steps loses that save's counter deltas.

Timers
------
``claim_due`` is one script on the global slot: it takes up to ``limit`` due members
of ``timers`` and sets their score to ``now + lease_ms`` in the same step, so exactly
one caller gets each. The same script unindexes the ended sessions whose retention
ran out (the caller then deletes their keys) and drops index entries too old to
belong to any live session. Claimed ids whose session expired are dropped rather
than returned.

Fan-out
-------
Plain PUBLISH/SUBSCRIBE: ``paylive:{<id>}:ev`` per session (the hash tag is for a
later move to sharded pub/sub), ``paylive:admin`` for the admin feed. Plain pub/sub
works on one node and, broadcast over the bus, on Cluster, where subscribing on any
one node receives everything. Each engine holds exactly ONE subscription connection,
outside the command pool and without a read timeout. One listener task reads it and
hands the raw bytes to ``on_event`` (payloads are never decoded here). Channels are
subscribed on demand and the SUBSCRIBE is confirmed before ``subscribe`` returns, so
an event saved afterwards by any worker is delivered.

A subscription can die in two ways: loudly (the socket closes: the read fails) or
silently (no error, no delivery: a frozen server, a half-open TCP connection, a lost
cluster node). For the second, a supervisor publishes a probe on this engine's own
channel every ``probe_interval`` s and expects to read it back within
``probe_timeout`` s. Either way: ``subscription_healthy`` goes False, the connection
is dropped, a new one is made with capped exponential backoff and jitter, every
current channel is subscribed again, and only then ``on_resync`` is called, so that
the snapshots it triggers cannot miss an event.

Availability
------------
Commands use a BlockingConnectionPool of ``max_connections`` (redis-py 8 raises "Too
many connections" on its default pool instead of waiting) with 1 s connect, read and
pool-wait timeouts, and no automatic retries (a retried compare-and-set could report
a save it made as lost). Every connection failure, timeout, loading or cluster-down
error becomes ``EngineUnavailable`` so that the API answers 503 within 1-2 s.

Cluster
-------
``redis.asyncio.cluster.RedisCluster`` runs the commands when the URL says
``?cluster=1``, or when ``start`` finds ``cluster_enabled:1`` and the URL does not
say ``?cluster=0``. Its per-node pools do not wait, so a semaphore of
``max_connections`` bounds the operations in flight instead. The subscription is a
plain connection to one node, moving to the next known node after each failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import random
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis import exceptions as rexc
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..core.session import TERMINAL_STATUSES, Session
from ..settings import Settings
from .base import Engine, EngineUnavailable

__all__ = ["RedisEngine"]

log = logging.getLogger(__name__)

PREFIX = "paylive"
ADMIN_CHANNEL = f"{PREFIX}:admin".encode()
_G = f"{PREFIX}:{{_global}}"
TIMERS = f"{_G}:timers"
ORDER = f"{_G}:order"
ACTIVE = f"{_G}:active"
ENDED = f"{_G}:ended"
COUNTERS = f"{_G}:counters"
TVER = f"{_G}:tver"

# Ended sessions purged per claim_due call at most, so that a backlog drains in small
# steps (claim_due runs every timer_poll_ms on every worker).
PURGE_BATCH = 200
# Channels per SUBSCRIBE command when a connection subscribes everything again.
SUBSCRIBE_CHUNK = 1_000
# list_sessions skips (and unindexes) sessions that expired; it looks at most this
# many pages for replacements, so a listing stays bounded.
LIST_PAGES = 4

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
_TRANSIENT_REPLIES = ("BUSY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS")


@dataclass(frozen=True)
class _Script:
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


# KEYS: s, h. ARGV: record, version, status, ttl_ms.
_CREATE = _Script(
    """
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'v', ARGV[2], 'st', ARGV[3], 'n', 0)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
)

# KEYS: order, active, timers, counters, tver, ended.
# ARGV: id, created_at, due or '', version, admin channel, notice, then stat name/delta pairs.
# The creation score is created_at, but strictly above the newest one held, so that
# the index keeps insertion order (as the memory engine does) even within one ms.
_CREATE_GLOBAL = _Script(
    """
local id = ARGV[1]
local score = tonumber(ARGV[2])
local top = redis.call('ZREVRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if top[2] then
  local last = tonumber(top[2])
  if score <= last then score = last + 0.0009765625 end
end
score = string.format('%.17g', score)
redis.call('ZADD', KEYS[1], score, id)
redis.call('ZADD', KEYS[2], score, id)
redis.call('ZREM', KEYS[6], id)
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[3], id)
else
  redis.call('ZADD', KEYS[3], ARGV[3], id)
end
redis.call('HSET', KEYS[5], id, ARGV[4])
for i = 7, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1])
end
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
"""
)

# The save's ARGV, the same for both save scripts: expected version, record, new
# version, status, ttl_ms, history cap, session channel, admin channel, id, due or '',
# terminal '1'/'0', purge time, event count n, then the n events, then stat
# name/delta pairs. KEYS[1], KEYS[2]: the session's s and h.
# Compare the version (nil, and nothing changed, when it moved), store, append to the
# capped history, publish; leaves the previous status in ``previous``.
_STORE = """
local cur = redis.call('HMGET', KEYS[1], 'v', 'st')
if cur[1] ~= ARGV[1] then
  return false
end
local id = ARGV[9]
local n = tonumber(ARGV[13])
redis.call('HSET', KEYS[1], 'r', ARGV[2], 'v', ARGV[3], 'st', ARGV[4])
if n > 0 then
  for i = 14, 13 + n do
    redis.call('RPUSH', KEYS[2], ARGV[i])
  end
  local cap = tonumber(ARGV[6])
  if cap > 0 then
    redis.call('LTRIM', KEYS[2], -cap, -1)
  else
    redis.call('DEL', KEYS[2])
  end
  redis.call('HINCRBY', KEYS[1], 'n', n)
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
for i = 14, 13 + n do
  redis.call('PUBLISH', ARGV[7], ARGV[i])
  redis.call('PUBLISH', ARGV[8], ARGV[i])
end
local previous = cur[2] or ''
"""

# Cluster: the session's slot only; the global keys follow in _SAVE_GLOBAL.
# Returns the previous status, or nil when the version moved.
_SAVE = _Script(_STORE + "return previous\n")

# KEYS: timers, active, ended, counters, tver.
# ARGV: id, version, due or '', terminal '1'/'0', purge time or '', then stat pairs.
_SAVE_GLOBAL = _Script(
    """
local id = ARGV[1]
for i = 6, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1])
end
if ARGV[4] == '1' then
  redis.call('ZREM', KEYS[2], id)
  if ARGV[5] ~= '' then
    redis.call('ZADD', KEYS[3], 'NX', ARGV[5], id)
  end
end
local seen = tonumber(redis.call('HGET', KEYS[5], id) or '-1')
if tonumber(ARGV[2]) > seen then
  if ARGV[3] == '' then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('ZADD', KEYS[1], ARGV[3], id)
  end
  redis.call('HSET', KEYS[5], id, ARGV[2])
end
return 1
"""
)

# One node only (every key on the same server): _SAVE and _SAVE_GLOBAL as one atomic
# script, so a save is one round trip and counters, indexes and the timer can never
# lag behind the session. KEYS: s, h, timers, active, ended, counters, tver.
_SAVE_ONE_NODE = _Script(
    _STORE
    + """
for i = 14 + n, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[6], ARGV[i], ARGV[i + 1])
end
local ended = {succeeded = true, failed = true, cancelled = true, expired = true}
if ARGV[11] == '1' then
  redis.call('ZREM', KEYS[4], id)
  if not ended[previous] then
    redis.call('ZADD', KEYS[5], 'NX', ARGV[12], id)
  end
end
if ARGV[10] == '' then
  redis.call('ZREM', KEYS[3], id)
else
  redis.call('ZADD', KEYS[3], ARGV[10], id)
end
redis.call('HSET', KEYS[7], id, ARGV[3])
return previous
"""
)

# KEYS: s, h. ARGV: since. nil when the session is gone or events were trimmed away.
_HISTORY = _Script(
    """
local n = redis.call('HGET', KEYS[1], 'n')
if not n then
  return false
end
n = tonumber(n)
local first = n - redis.call('LLEN', KEYS[2]) + 1
local since = tonumber(ARGV[1])
if since + 1 < first then
  return false
end
if since >= n then
  return {}
end
return redis.call('LRANGE', KEYS[2], since + 1 - first, -1)
"""
)

# KEYS: timers, ended, order, active, tver. ARGV: now, limit, lease end, purge batch,
# index cutoff. Returns {claimed ids, purged ids}.
# First the purge, as the memory engine does it: ended sessions whose retention ran
# out at ``now`` are unindexed here and their keys (in other slots) deleted by the
# caller. Index entries older than the cutoff can only be leftovers of a crash.
# Then the claim: due timers are pushed to the lease end in the same step, so that
# exactly one caller gets each.
_CLAIM = _Script(
    """
local purged = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
for _, id in ipairs(purged) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[5], id)
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[5])
local claimed = {}
if tonumber(ARGV[2]) > 0 then
  claimed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
  for _, id in ipairs(claimed) do
    redis.call('ZADD', KEYS[1], ARGV[3], id)
  end
end
return {claimed, purged}
"""
)

# KEYS: order, active, timers, ended, tver. ARGV: ids whose session keys are gone.
_FORGET = _Script(
    """
for i = 1, #ARGV do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
  redis.call('ZREM', KEYS[4], ARGV[i])
  redis.call('HDEL', KEYS[5], ARGV[i])
end
return 1
"""
)

# KEYS: the record. ARGV: value, ttl_ms. Returns the value held, or nil when stored.
_PUT_IF_ABSENT = _Script(
    """
local held = redis.call('GET', KEYS[1])
if held then
  return held
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return false
"""
)


def _session_keys(session_id: str) -> list[str]:
    # Both keys share the hash tag, whatever the id holds, because they share the
    # prefix up to the first "}" after "{" (an empty tag would not, hence the check
    # in the callers).
    return [f"{PREFIX}:{{{session_id}}}:s", f"{PREFIX}:{{{session_id}}}:h"]


def _session_channel(session_id: str) -> bytes:
    return f"{PREFIX}:{{{session_id}}}:ev".encode()


def _record_key(key: str) -> str:
    return f"{PREFIX}:rec:{key}"


def _dump(session: Session) -> bytes:
    return json.dumps(session.to_record(), separators=(",", ":"), ensure_ascii=False).encode()


def _load(raw: bytes) -> Session:
    return Session.from_record(json.loads(raw))


def _stat_args(stats: Mapping[str, int]) -> list[Any]:
    out: list[Any] = []
    for name, value in stats.items():
        out += [name, int(value)]
    return out


def _split_url(url: str) -> tuple[str, bool | None]:
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


class _SubscriptionLost(Exception):
    """The subscription connection stopped delivering; make a new one."""


class RedisEngine(Engine):
    """Sessions, history, timers, records and fan-out in Redis (see the module docstring).

    ``url`` is a redis://, rediss:// or unix:// URL; ``?cluster=1`` selects the Redis
    Cluster client. The keyword arguments are the limits of this engine; the defaults
    suit a worker of the server.
    """

    def __init__(
        self,
        url: str,
        settings: Settings,
        *,
        max_connections: int = 64,
        command_timeout: float = 1.0,
        probe_interval: float = 2.0,
        probe_timeout: float = 2.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
    ) -> None:
        super().__init__()
        self._settings = settings
        self._url, self._cluster_flag = _split_url(url)
        self._max_connections = max_connections
        self._timeout = command_timeout
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._tcp = not self._url.startswith("unix://")

        self._r: Redis | RedisCluster
        self._pool: BlockingConnectionPool | None = None
        self._gate: asyncio.Semaphore | None = None
        if self._cluster_flag:
            self._use_cluster()
        else:
            self._use_single()

        # Fan-out state. ``_channels`` is what should be subscribed (channel -> session
        # id, None for the admin channel); the listener delivers only what is in it.
        self._channels: dict[bytes, str | None] = {}
        self._probe_channel = f"{PREFIX}:probe:{uuid.uuid4().hex}".encode()
        self._probe_token: bytes | None = None
        self._probe_seen: asyncio.Future[bool] | None = None
        self._conn: AbstractConnection | None = None
        # SUBSCRIBE confirmations arrive in the order the channels were sent, so a
        # FIFO of (channel, waiter) pairs tells whom each confirmation is for.
        self._expect: deque[tuple[bytes, asyncio.Future[bool] | None]] = deque()
        self._send_lock = asyncio.Lock()
        self._healthy = False
        self._ready = asyncio.Event()
        self._lost = False  # a subscription was lost (or never made) since the last resync
        self._failures = 0
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    # Clients ----------------------------------------------------------------

    def _use_single(self) -> None:
        extra: dict[str, Any] = {"socket_keepalive": True} if self._tcp else {}
        self._pool = BlockingConnectionPool.from_url(
            self._url,
            max_connections=self._max_connections,
            timeout=self._timeout,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
            # RESP2: redis-py 8 defaults to RESP3, which turns on "maintenance
            # notifications" and with them skips the pool's check for connections the
            # server closed, so the first command after a Redis restart would fail.
            protocol=2,
            **extra,
        )
        self._r = Redis.from_pool(self._pool)
        self._gate = None

    def _use_cluster(self) -> None:
        self._r = RedisCluster.from_url(
            self._url,
            max_connections=self._max_connections,
            socket_timeout=self._timeout,
            socket_connect_timeout=self._timeout,
            retry=Retry(NoBackoff(), 0),
            protocol=2,  # as for one node
        )
        self._pool = None
        # The cluster's per-node pools raise instead of waiting when full.
        self._gate = asyncio.Semaphore(self._max_connections)

    @property
    def cluster(self) -> bool:
        """True when commands go through the Redis Cluster client."""
        return isinstance(self._r, RedisCluster)

    @contextlib.asynccontextmanager
    async def _op(self) -> AsyncIterator[None]:
        """One engine operation: bounded in concurrency, failures mapped to EngineUnavailable."""
        try:
            gate = self._gate
            if gate is None:
                yield
            else:
                async with asyncio.timeout(self._timeout):
                    await gate.acquire()
                try:
                    yield
                finally:
                    gate.release()
        except EngineUnavailable:
            raise
        except _UNAVAILABLE as exc:
            raise EngineUnavailable(f"Redis is unavailable: {type(exc).__name__}: {exc}") from exc
        except rexc.ResponseError as exc:
            if str(exc).startswith(_TRANSIENT_REPLIES):
                raise EngineUnavailable(
                    f"Redis is unavailable: {type(exc).__name__}: {exc}"
                ) from exc
            raise

    async def _eval(self, script: _Script, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await self._r.evalsha(script.sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            # First use on this server (or after a restart): EVAL also caches it.
            return await self._r.eval(script.source, len(keys), *keys, *args)

    # Lifecycle --------------------------------------------------------------

    async def start(self) -> None:
        """Pick the client, start the subscription and wait (briefly) until it is live.

        Redis being down is not an error here: the engine keeps trying, and the API
        answers 503 until it is back.
        """
        if self._task is not None:
            return
        self._closed = False
        if self._cluster_flag is None:
            await self._detect_cluster()
        self._task = asyncio.create_task(self._supervise(), name="paylive-redis-subscription")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2 * self._timeout):
                await self._ready.wait()

    async def _detect_cluster(self) -> None:
        try:
            async with self._op(), asyncio.timeout(self._timeout):
                info = await self._r.info("cluster")
        except (EngineUnavailable, rexc.ResponseError) as exc:
            log.warning("could not ask Redis whether it is a cluster: %s", exc)
            return
        if info.get("cluster_enabled") and not self.cluster:
            await self._r.aclose()
            self._use_cluster()

    async def close(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        await self._r.aclose()

    async def ping(self) -> None:
        async with self._op(), asyncio.timeout(self._timeout):
            await self._r.ping()

    @property
    def subscription_healthy(self) -> bool:
        return self._healthy

    # Sessions ---------------------------------------------------------------

    def _ttl(self, terminal: bool) -> int:
        s = self._settings
        ttl = s.retention_after_end_ms if terminal else s.session_ttl_ms + s.retention_after_end_ms
        return max(1, ttl)

    async def create(self, session: Session, stats: Mapping[str, int], notice: bytes) -> None:
        if not session.id:
            raise ValueError("a session needs an id")
        due = session.next_due()
        async with self._op():
            await self._eval(
                _CREATE,
                _session_keys(session.id),
                [_dump(session), session.version, session.status, self._ttl(session.terminal)],
            )
            await self._eval(
                _CREATE_GLOBAL,
                [ORDER, ACTIVE, TIMERS, COUNTERS, TVER, ENDED],
                [
                    session.id,
                    session.created_at,
                    "" if due is None else due,
                    session.version,
                    ADMIN_CHANNEL,
                    notice,
                    *_stat_args(stats),
                ],
            )

    async def load(self, session_id: str) -> Session | None:
        if not session_id:
            return None
        async with self._op():
            raw: Any = await self._r.hget(_session_keys(session_id)[0], "r")
        return None if raw is None else _load(raw)

    async def save(
        self,
        session: Session,
        expected_version: int,
        events: Sequence[bytes],
        stats: Mapping[str, int],
    ) -> bool:
        """See ``Engine.save``; the module docstring says what is atomic and what is not."""
        if not session.id:
            return False
        stored = replace(session, version=expected_version + 1)
        due = stored.next_due()
        terminal = stored.terminal
        keys = _session_keys(session.id)
        args = self._save_args(stored, expected_version, events, stats)
        if not self.cluster:
            # Every key on one server: the whole save, indexes and counters included,
            # is one script and one round trip.
            async with self._op():
                previous = await self._eval(
                    _SAVE_ONE_NODE, [*keys, TIMERS, ACTIVE, ENDED, COUNTERS, TVER], args
                )
            return previous is not None
        async with self._op():
            previous = await self._compare_and_set(session.id, due, keys, args)
        if previous is None:
            return False
        was_terminal = previous.decode() in TERMINAL_STATUSES
        purge_at = (
            stored.updated_at + self._settings.retention_after_end_ms
            if terminal and not was_terminal
            else ""
        )
        try:
            async with self._op():
                await self._eval(
                    _SAVE_GLOBAL,
                    [TIMERS, ACTIVE, ENDED, COUNTERS, TVER],
                    [
                        session.id,
                        stored.version,
                        "" if due is None else due,
                        "1" if terminal else "0",
                        purge_at,
                        *_stat_args(stats),
                    ],
                )
        except EngineUnavailable:
            # The save itself is stored and published: that is what the caller must
            # act on. The early timer was written before it; only counters may drift.
            log.warning(
                "session %s saved, but its counters and indexes were not updated",
                session.id,
                exc_info=True,
            )
        return True

    def _save_args(
        self,
        stored: Session,
        expected_version: int,
        events: Sequence[bytes],
        stats: Mapping[str, int],
    ) -> list[Any]:
        """ARGV of _SAVE and _SAVE_ONE_NODE (the layout is written above _STORE)."""
        due = stored.next_due()
        return [
            expected_version,
            _dump(stored),
            stored.version,
            stored.status,
            self._ttl(stored.terminal),
            self._settings.history_cap,
            _session_channel(stored.id),
            ADMIN_CHANNEL,
            stored.id,
            "" if due is None else due,
            "1" if stored.terminal else "0",
            stored.updated_at + self._settings.retention_after_end_ms,
            len(events),
            *events,
            *_stat_args(stats),
        ]

    async def _compare_and_set(
        self, session_id: str, due: int | None, keys: list[str], args: list[Any]
    ) -> bytes | None:
        """The timer hint (ZADD LT) and the save script; the previous status, or None."""
        if due is None:
            result = await self._eval(_SAVE, keys, args)
        elif self.cluster:
            # Different slots, perhaps different nodes: two calls.
            await self._r.zadd(TIMERS, {session_id: due}, lt=True)
            result = await self._eval(_SAVE, keys, args)
        else:
            # One round trip for both on a single node.
            async with self._r.pipeline(transaction=False) as pipe:
                pipe.zadd(TIMERS, {session_id: due}, lt=True)
                pipe.evalsha(_SAVE.sha, len(keys), *keys, *args)
                _, result = await pipe.execute(raise_on_error=False)
            if isinstance(result, rexc.NoScriptError):
                result = await self._eval(_SAVE, keys, args)
            elif isinstance(result, BaseException):
                raise result
        return result  # type: ignore[no-any-return]

    async def history(self, session_id: str, since: int) -> list[bytes] | None:
        if not session_id:
            return None
        async with self._op():
            held = await self._eval(_HISTORY, _session_keys(session_id), [since])
        return None if held is None else list(held)

    async def list_sessions(self, active_only: bool, limit: int) -> list[Session]:
        if limit <= 0:
            return []
        index = ACTIVE if active_only else ORDER
        out: list[Session] = []
        start = 0
        async with self._op():
            for _ in range(LIST_PAGES):
                want = limit - len(out)
                page: Any = await self._r.zrevrange(index, start, start + want - 1)
                ids = [i.decode() for i in page]
                if not ids:
                    break
                async with self._r.pipeline(transaction=False) as pipe:
                    for session_id in ids:
                        pipe.hget(_session_keys(session_id)[0], "r")
                    records = await pipe.execute()
                gone = [sid for sid, raw in zip(ids, records, strict=True) if raw is None]
                out += [_load(raw) for raw in records if raw is not None]
                # The session keys expired before their index entries were purged:
                # unindex them (the remaining entries move up by as many places).
                start += len(ids) - len(gone)
                if gone:
                    await self._eval(_FORGET, [ORDER, ACTIVE, TIMERS, ENDED, TVER], gone)
                if len(out) >= limit or len(ids) < want:
                    break
        return out

    async def counters(self) -> dict[str, int]:
        async with self._op():
            raw: Any = await self._r.hgetall(COUNTERS)
        return {name.decode(): int(value) for name, value in raw.items()}

    # Timers -----------------------------------------------------------------

    async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[str]:
        s = self._settings
        # Generous: no live session is older than its ttl, a last attempt and retention.
        cutoff = now - 2 * (s.session_ttl_ms + s.attempt_timeout_ms + s.retention_after_end_ms)
        async with self._op():
            claimed, purged = await self._eval(
                _CLAIM,
                [TIMERS, ENDED, ORDER, ACTIVE, TVER],
                [now, max(0, limit), now + lease_ms, PURGE_BATCH, cutoff],
            )
            ids = [i.decode() for i in claimed]
            async with self._r.pipeline(transaction=False) as pipe:
                for raw in purged:
                    pipe.delete(*_session_keys(raw.decode()))
                for session_id in ids:
                    pipe.exists(_session_keys(session_id)[0])
                replies = await pipe.execute() if purged or ids else []
            exists = replies[len(purged) :]
            gone = [sid for sid, held in zip(ids, exists, strict=True) if not held]
            if gone:
                # Expired while their timer was still set: nothing to fire, ever.
                await self._eval(_FORGET, [ORDER, ACTIVE, TIMERS, ENDED, TVER], gone)
            return [sid for sid, held in zip(ids, exists, strict=True) if held]

    async def schedule(self, session_id: str, due: int | None) -> None:
        if not session_id:
            return
        async with self._op():
            if due is None:
                await self._r.zrem(TIMERS, session_id)
                return
            if await self._r.exists(_session_keys(session_id)[0]):
                await self._r.zadd(TIMERS, {session_id: due})

    # Records ----------------------------------------------------------------

    async def put_if_absent(self, key: str, value: bytes, ttl_ms: int) -> bytes | None:
        async with self._op():
            held = await self._eval(_PUT_IF_ABSENT, [_record_key(key)], [value, ttl_ms])
        return held  # type: ignore[no-any-return]

    async def put(self, key: str, value: bytes, ttl_ms: int) -> None:
        async with self._op():
            if ttl_ms > 0:
                await self._r.set(_record_key(key), value, px=ttl_ms)
            else:
                await self._r.delete(_record_key(key))  # expired at once, as in memory

    async def get(self, key: str) -> bytes | None:
        async with self._op():
            held: Any = await self._r.get(_record_key(key))
        return held  # type: ignore[no-any-return]

    async def delete(self, key: str) -> None:
        async with self._op():
            await self._r.delete(_record_key(key))

    # Fan-out: the API -------------------------------------------------------

    @staticmethod
    def _channel(session_id: str | None) -> bytes:
        return ADMIN_CHANNEL if session_id is None else _session_channel(session_id)

    async def subscribe(self, session_id: str | None) -> None:
        """Subscribe, and wait (at most ~2 s) until Redis confirms it.

        While the subscription is down this returns at once: the channel is subscribed
        with all others when the connection is back, and ``on_resync`` follows.
        """
        channel = self._channel(session_id)
        if channel in self._channels:
            return
        self._channels[channel] = session_id
        conn = self._conn
        if conn is None:
            return
        waiter: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        try:
            # Bounded: a send that cannot finish closes the connection (redis-py drops
            # it), and the supervisor then makes a new one with every channel.
            async with asyncio.timeout(2 * self._timeout):
                async with self._send_lock:
                    if conn is not self._conn:
                        return  # replaced meanwhile; the new connection subscribed it
                    self._expect.append((channel, waiter))
                    await conn.send_command("SUBSCRIBE", channel)
                confirmed = await waiter
            if not confirmed:
                log.debug("subscription to %r not confirmed; it follows the reconnection", channel)
        except (rexc.RedisError, OSError, TimeoutError) as exc:
            # The supervisor notices a dead connection through the read loop or the
            # probe, subscribes everything again and calls on_resync.
            log.debug("subscribing to %r failed: %r", channel, exc)

    async def unsubscribe(self, session_id: str | None) -> None:
        channel = self._channel(session_id)
        if self._channels.pop(channel, False) is False:
            return
        conn = self._conn
        if conn is None:
            return
        try:
            async with asyncio.timeout(2 * self._timeout), self._send_lock:
                if conn is self._conn:
                    await conn.send_command("UNSUBSCRIBE", channel)
        except (rexc.RedisError, OSError, TimeoutError) as exc:
            log.debug("unsubscribing from %r failed: %r", channel, exc)

    # Fan-out: the subscription connection -----------------------------------

    def _subscriber_connection(self) -> AbstractConnection:
        """A new connection for the subscription, outside the command pool."""
        overrides: dict[str, Any] = {
            "socket_timeout": None,  # it waits for messages: no read timeout
            "socket_connect_timeout": self._timeout,
            "retry": Retry(NoBackoff(), 0),
            "health_check_interval": 0,  # the probe checks it, end to end
            "protocol": 2,  # messages as plain arrays, not RESP3 pushes
        }
        if self._pool is not None:
            kwargs = {**self._pool.connection_kwargs, **overrides}
            return self._pool.connection_class(**kwargs)
        assert isinstance(self._r, RedisCluster)
        nodes = self._r.get_nodes()
        if nodes:
            # Move along the known nodes after each failure, in case one is lost.
            node = nodes[self._failures % len(nodes)]
            return node.connection_class(**{**node.connection_kwargs, **overrides})
        kwargs = dict(parse_url(self._url))
        kwargs.pop("connection_class", None)
        return Connection(**{**kwargs, **overrides})

    def _backoff(self) -> float:
        """Capped exponential backoff with jitter: half fixed, half random."""
        delay = min(self._backoff_cap, self._backoff_base * 2.0 ** min(self._failures, 30))
        return delay / 2 + random.uniform(0, delay / 2)

    async def _supervise(self) -> None:
        """Keep one subscription alive for the engine's life. Never returns by itself."""
        self._lost = False
        while not self._closed:
            conn: AbstractConnection | None = None
            try:
                conn = self._subscriber_connection()
                await self._run(conn)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means "reconnect"
                if self._healthy:
                    log.warning(
                        "Redis subscription lost (%s: %s); reconnecting", type(exc).__name__, exc
                    )
                else:
                    log.debug("Redis subscription attempt failed (%s: %s)", type(exc).__name__, exc)
            finally:
                self._healthy = False
                self._ready.clear()
                self._lost = True
                await self._drop(conn)
            self._failures += 1
            await asyncio.sleep(self._backoff())

    async def _drop(self, conn: AbstractConnection | None) -> None:
        self._conn = None
        while self._expect:
            _, waiter = self._expect.popleft()
            if waiter is not None and not waiter.done():
                waiter.set_result(False)
        if self._probe_seen is not None and not self._probe_seen.done():
            self._probe_seen.set_result(False)
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    async def _run(self, conn: AbstractConnection) -> None:
        """Connect, subscribe every channel, then probe until the connection fails."""
        # The handshake reads have no timeout on this connection: bound them here, so
        # that a frozen server cannot hold the reconnection forever.
        async with asyncio.timeout(2 * self._timeout):
            await conn.connect()
        self._conn = conn
        reader = asyncio.create_task(self._read(conn), name="paylive-redis-reader")
        try:
            async with asyncio.timeout(2 * self._timeout):
                confirmed = await self._subscribe_all(conn)
            first: set[asyncio.Future[Any]] = {reader, confirmed}
            done, _ = await asyncio.wait(
                first, timeout=2 * self._timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if confirmed not in done or not confirmed.result():
                if reader in done:
                    reader.result()
                raise _SubscriptionLost("the subscriptions were not confirmed in time")
            self._healthy = True
            self._ready.set()
            if self._lost:
                self._lost = False
                self._resync()
            await self._probe_until_lost(reader)
        finally:
            reader.cancel()
            await asyncio.wait({reader})

    async def _subscribe_all(self, conn: AbstractConnection) -> asyncio.Future[bool]:
        """SUBSCRIBE every current channel; the future resolves with the last confirmation."""
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        async with self._send_lock:
            channels = [self._probe_channel, *self._channels]
            for channel in channels[:-1]:
                self._expect.append((channel, None))
            self._expect.append((channels[-1], done))
            for i in range(0, len(channels), SUBSCRIBE_CHUNK):
                await conn.send_command("SUBSCRIBE", *channels[i : i + SUBSCRIBE_CHUNK])
        return done

    async def _probe_until_lost(self, reader: asyncio.Task[None]) -> None:
        """Every probe_interval, publish a probe and expect it back within probe_timeout."""
        loop = asyncio.get_running_loop()
        while True:
            done, _ = await asyncio.wait({reader}, timeout=self._probe_interval)
            if done:
                reader.result()
                raise _SubscriptionLost("the subscription connection closed")
            token = uuid.uuid4().hex.encode()
            seen: asyncio.Future[bool] = loop.create_future()
            self._probe_token, self._probe_seen = token, seen
            try:
                async with self._op(), asyncio.timeout(self._timeout):
                    await self._r.publish(self._probe_channel, token)
            except EngineUnavailable as exc:
                raise _SubscriptionLost("could not publish the probe") from exc
            either: set[asyncio.Future[Any]] = {reader, seen}
            arrived, _ = await asyncio.wait(
                either, timeout=self._probe_timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if seen not in arrived or not seen.result():
                if reader in arrived:
                    reader.result()
                raise _SubscriptionLost("the probe did not come back: the subscription is silent")
            # Only a connection that delivered end to end resets the backoff: one that
            # fails right after subscribing must not reconnect (and resync) in a tight loop.
            self._failures = 0

    async def _read(self, conn: AbstractConnection) -> None:
        """The single listener: read replies and messages until the connection fails."""
        while True:
            reply = await conn.read_response(disable_decoding=True, timeout=math.inf)
            kind = reply[0]
            if kind == b"message":
                self._deliver(reply[1], reply[2])
            elif kind == b"subscribe":
                self._confirm(reply[1])
            # "unsubscribe" and "pong" replies need nothing.

    def _confirm(self, channel: bytes) -> None:
        if not self._expect:
            log.warning("unexpected subscription confirmation for %r", channel)
            return
        expected, waiter = self._expect.popleft()
        if expected != channel:
            log.warning("subscription confirmed for %r, expected %r", channel, expected)
        if waiter is not None and not waiter.done():
            waiter.set_result(True)

    def _deliver(self, channel: bytes, payload: bytes) -> None:
        if channel == self._probe_channel:
            seen = self._probe_seen
            if seen is not None and not seen.done() and payload == self._probe_token:
                seen.set_result(True)
            return
        if channel not in self._channels:
            return  # unsubscribed while the message was on its way
        try:
            self._on_event(self._channels[channel], payload)
        except Exception:
            log.exception("the event listener failed on %r", channel)

    def _resync(self) -> None:
        try:
            self._on_resync()
        except Exception:
            log.exception("the resync listener failed")
