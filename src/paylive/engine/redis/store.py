"""Storage: sessions, their history, the indexes, counters, timers and records.

One save
--------
On a single Redis (not Cluster) every key lives on one server, so ``save`` is one
script, ``save_one_node.lua``, that does everything below atomically in one round
trip: nothing of the two-step trade-off applies there (nor its version guard,
``tver``). The same script claims the records the decision's charges start with (the
sandbox's ledger entry, ``Gateway.charge_claims``), only when the compare-and-set
wins, and ``claim`` answers the charge's own claim from that, so a pay is one round
trip. A save that records a staff or shop action (``audit``) also adds its entry to
the audit trail of every session in that script, so the entry is there exactly when
the action is. The record notes the version of a save that left the session out of the
effects, pending and review indexes (``x``, see store.lua), so the next save removes
it only from those it may be in.

On Cluster, ``save`` is one Lua script on the session's slot: compare the version,
store the record, append the events to the capped history and PUBLISH each of them
on the session channel and the admin channel. No event is published for a state that was not stored, and none
stored without being published. The global keys live in another slot (on Cluster,
perhaps another node), so a second script updates them right after a successful
compare-and-set: counters, the active index, the purge time, the timer, and the
outbox's due time and indexes. That second step is not atomic with the first, and
this is the trade-off:

- The timer is only a hint, because firing is idempotent (a tick for a session that
  moved on does nothing). To lose no deadline if the worker dies between the two
  steps, the new due time is written *before* the compare-and-set with ``ZADD LT``:
  it can only move the timer earlier, and a spurious early tick is harmless. So a
  save that loses the compare-and-set may still leave an earlier timer behind: the
  one way in which it is not "nothing changed" (the memory engine has no such tick).
- The exact timer write after the compare-and-set is guarded by the session version
  (``tver``), so that two workers' writes arriving out of order cannot leave a stale
  later due time in place of an earlier one.
- The outbox itself (gateway effects and merchant events owed to the shop) is in
  the session's record, so it is saved atomically with the decision on Cluster too. Its due time is a hint written before the compare-and-set
  exactly as the timer's (``ZADD LT``), so no effect is lost either; a claim that
  finds nothing due sets it right.
- A worker that dies between the two steps loses that save's counter deltas, and the
  outbox listings miss its session until its next save (its effect's first try).
- A create is two steps too (the session's own keys, then its indexes, counters,
  timer and admin notice). One whose reply is lost after the first step leaves a
  session nobody lists, counts or expires by its timer (its keys' expiry is the
  backstop): the retry of a keyed create finds it (the id is named after the
  request), asks ``finish_create`` with it, and the second step is made then, once
  (``create_again.lua``: unless the session's ``tver`` says a global step ran).
- A save whose reply is lost after the first step is as a worker that died between
  the two: the caller answers 503, the retry finds the save made (its version moved),
  and the counters, indexes and trail wait for the session's next save.
- The audit entry of a staff or shop action is saved in the session's record, and
  the trail of every session (a key of the global slot) gets it from the caller after
  the save (``Store.saves_audit`` is false): a worker that dies between the two
  leaves it in the session's own trail only.

Timers
------
``claim_due`` is one script on the global slot: it takes up to ``limit`` due members
of ``timers`` and sets their score to ``now + lease_ms`` in the same step, so exactly
one caller gets each. The same script unindexes the ended sessions whose retention
ran out (the caller then deletes their keys, each unless a save since has made it
kept, ``purge.lua``: exactly when the memory engine purges them, ``updated_at +
retention`` at the caller's clock) and drops index entries too
old to belong to any live session. Claimed ids whose session expired are dropped
rather than returned. The keys' own expiry is the backstop.

``claim_effects`` claims due outbox items from ``effects`` in the same way. A
session whose outbox owes anything is neither purged nor expired (see ``keys``).
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack

from ...core.evolve import evolve
from ...core.session import Session
from ...settings import RedisSettings
from ..base import AuditAdd, Claim, EngineUnavailable, RecordClaim
from . import scripts
from .cache import SessionCache
from .client import Client
from .keys import (
    ACTIVE,
    AUDIT,
    COUNTERS,
    EFFECTS,
    ENDED,
    ORDER,
    OUTBOX,
    PENDING,
    REVIEW,
    TIMERS,
    TVER,
    channel,
    record_key,
    session_channel,
    session_keys,
)

log = logging.getLogger(__name__)

# Ended sessions purged per claim_due call at most, so that a backlog drains in small
# steps (claim_due runs every timer_poll_ms on every worker).
PURGE_BATCH = 200
# Answers of records claimed with a save (``Store.save``'s ``claims``), held until the
# caller's own ``claim`` asks for them: at most this many, the oldest dropped (a
# charge never asked leaves one behind).
CLAIMS_HELD = 1_024
# list_sessions skips (and unindexes) sessions that expired; it looks at most this
# many pages for replacements, so a listing stays bounded.
LIST_PAGES = 4
# What forget.lua cleans: the version hash, then every index.
_FORGET_KEYS = [TVER, ORDER, ACTIVE, TIMERS, ENDED, EFFECTS, OUTBOX, PENDING, REVIEW]
_OUTBOX_INDEXES = [EFFECTS, OUTBOX, PENDING, REVIEW]


def _dump(session: Session) -> bytes:
    """The stored record: msgpack (a third smaller than JSON and four times quicker
    to make), or JSON for the rare record msgpack cannot hold (an integer in the
    metadata beyond 64 bits)."""
    record = session.to_record()
    try:
        return msgpack.packb(record, use_bin_type=True)  # type: ignore[no-any-return]
    except (OverflowError, ValueError):
        return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def _load(raw: bytes) -> Session:
    # A JSON record (the fallback, or one stored before records were msgpack) is an
    # object, "{"; a msgpack map never starts with that byte.
    if raw[:1] == b"{":
        return Session.from_record(json.loads(raw))
    return Session.from_record(msgpack.unpackb(raw, raw=False))


def _or_blank(value: int | None) -> int | str:
    return "" if value is None else value


def _outbox_args(session: Session) -> list[int | str]:
    """The five outbox arguments of the save scripts (see the top of store.lua)."""
    pending = [e.created_at for e in session.pending_effects]
    return [
        _or_blank(session.next_effect_at()),
        _or_blank(min(pending) if pending else None),
        _or_blank(min((e.created_at for e in session.effects), default=None)),
        session.updated_at if session.needs_review else "",
        # Kept (no expiry, no purge) while the outbox owes anything, and while a
        # person has not resolved its review, whatever the retention.
        "1" if session.owes or session.needs_review else "",
    ]


def _claim_reply(reply: list[Any]) -> Claim:
    """A claim's answer as claim_record.lua (and save_one_node.lua) give it."""
    if int(reply[0]):
        return Claim(blocked=True)
    return Claim(held=reply[1] if len(reply) > 1 else None)


def with_review_count(counters: dict[str, int], flagged: int) -> dict[str, int]:
    """The counters with ``needs_review`` as the review list holds it, never the
    running sum (which a purge or a crash between two steps could leave drifted)."""
    counters.pop("needs_review", None)
    if flagged:
        counters["needs_review"] = flagged
    return counters


def _stat_args(stats: Mapping[str, int]) -> list[Any]:
    out: list[Any] = []
    for name, value in stats.items():
        out += [name, int(value)]
    return out


class Store:
    """The storage half of the Redis engine (see the module docstring)."""

    def __init__(self, client: Client, settings: RedisSettings) -> None:
        self._client = client
        self._settings = settings
        self.cache = SessionCache(settings.session_cache_size)
        # record key -> (what was claimed, its answer): see ``claim``.
        self._claimed: OrderedDict[str, tuple[RecordClaim, Claim]] = OrderedDict()

    @property
    def sharded(self) -> bool:
        """Events go out with SPUBLISH: on Cluster, unless the settings turn it off."""
        return self._client.cluster and self._settings.redis_sharded_pubsub

    @property
    def saves_audit(self) -> bool:
        """On one node the save's script adds its audit entry; on Cluster the trail of
        every session lives in another slot (see the module docstring)."""
        return not self._client.cluster

    @property
    def _admin_channel(self) -> bytes:
        return channel(None, self.sharded)

    # Sessions ---------------------------------------------------------------

    def _ttl(self, terminal: bool) -> int:
        s = self._settings
        ttl = s.retention_after_end_ms if terminal else s.session_ttl_ms + s.retention_after_end_ms
        return max(1, ttl)

    async def create(self, session: Session, stats: Mapping[str, int], notice: bytes) -> bool:
        if not session.id:
            raise ValueError("a session needs an id")
        client = self._client
        own = [_dump(session), session.version, session.status, self._ttl(session.terminal)]
        global_keys, global_args = self._create_global(session, stats, notice)
        async with client.op():
            if not client.cluster:
                # Every key on one server: one script, one round trip.
                made = await client.eval(
                    scripts.CREATE_ONE_NODE,
                    [*session_keys(session.id), *global_keys],
                    [*own, *global_args],
                )
            else:
                made = await client.eval(scripts.CREATE, session_keys(session.id), own)
                # Stored already (a keyed create's earlier try, its reply lost): that
                # session's global step, if it is owed, is made with its own created_at
                # and expiry (``finish_create``), never with this one's.
                if made:
                    second = (
                        scripts.CREATE_GLOBAL_SHARDED if self.sharded else scripts.CREATE_GLOBAL
                    )
                    await client.eval(second, global_keys, global_args)
        if not made:
            return False
        self.cache.put(session)
        return True

    def _create_global(
        self, session: Session, stats: Mapping[str, int], notice: bytes
    ) -> tuple[list[str], list[Any]]:
        """The keys and ARGV of a create's global step (create_global.lua)."""
        due = session.next_due()
        return [ORDER, ACTIVE, TIMERS, COUNTERS, TVER, ENDED], [
            session.id,
            session.created_at,
            "" if due is None else due,
            session.version,
            self._admin_channel,
            notice,
            *_stat_args(stats),
        ]

    async def finish_create(
        self, session: Session, stats: Mapping[str, int], notice: bytes
    ) -> None:
        """On Cluster, the global step of ``session``'s create (as stored: the caller
        read it back), unless one ran (create_again.lua); one node needs nothing."""
        client = self._client
        if not client.cluster:
            return
        keys, args = self._create_global(session, stats, notice)
        script = (
            scripts.CREATE_GLOBAL_AGAIN_SHARDED if self.sharded else scripts.CREATE_GLOBAL_AGAIN
        )
        async with client.op():
            await client.eval(script, keys, args)

    async def load(self, session_id: str) -> Session | None:
        if not session_id:
            return None
        async with self._client.op():
            raw: Any = await self._client.call("HGET", session_keys(session_id)[0], "r")
        session = None if raw is None else _load(raw)
        self.cache.refresh(session_id, session)
        return session

    async def load_for_update(self, session_id: str) -> Session | None:
        """This worker's cached copy when it has one (see ``cache``), else ``load``."""
        cached = self.cache.get(session_id)
        if cached is not None:
            return cached
        session = await self.load(session_id)
        if session is not None:
            self.cache.put(session)
        return session

    def _moved(self, session_id: str, reply: list[Any]) -> bool:
        """A save whose version had moved: keep the current record it brought back."""
        if reply and reply[0] is not None:
            self.cache.put(_load(reply[0]))
        else:
            self.cache.drop(session_id)
        return False

    async def save(
        self,
        session: Session,
        expected_version: int,
        events: Sequence[bytes],
        stats: Mapping[str, int],
        claims: Sequence[RecordClaim] = (),
        audit: AuditAdd | None = None,
    ) -> bool:
        """See ``Engine.save``; the module docstring says what is atomic and what is not.
        ``claims`` are made in the save's script on one node (see ``claim``), and left
        to the caller on Cluster, where the records live in other slots; so is
        ``audit``."""
        if not session.id:
            return False
        try:
            return await self._save(session, expected_version, events, stats, claims, audit)
        except BaseException:
            self.cache.drop(session.id)  # the save may or may not have happened
            raise

    async def _save(
        self,
        session: Session,
        expected_version: int,
        events: Sequence[bytes],
        stats: Mapping[str, int],
        claims: Sequence[RecordClaim],
        audit: AuditAdd | None,
    ) -> bool:
        client = self._client
        stored = evolve(session, version=expected_version + 1)
        due = stored.next_due()
        effect_due = stored.next_effect_at()
        keys = session_keys(session.id)
        if not client.cluster:
            # Every key on one server: the whole save, indexes, counters and the records
            # its charges claim included, is one script and one round trip.
            claim_keys: list[str] = []
            claim_args: list[Any] = []
            for made in claims:
                claim_keys.append(record_key(made.key))
                if made.unless is not None:
                    claim_keys.append(record_key(made.unless))
                claim_args += [made.value, made.ttl_ms, int(made.unless is not None)]
            if audit is not None:
                # The trail's key after the records' is what tells the script: a save
                # without an entry sends nothing more.
                claim_keys.append(AUDIT)
                claim_args += [audit.entry, audit.kept]
            args = self._save_args(stored, expected_version, events, stats, claims, claim_args)
            async with client.op():
                reply = await client.eval(
                    scripts.SAVE_ONE_NODE,
                    [*keys, TIMERS, ACTIVE, ENDED, COUNTERS, TVER, *_OUTBOX_INDEXES, *claim_keys],
                    args,
                )
            if reply[0] != b"ok":
                return self._moved(session.id, reply)
            self.cache.put(stored, events)
            for made, answer in zip(claims, reply[1:], strict=True):
                self._hold(made, _claim_reply(answer))
            return True
        args = self._save_args(stored, expected_version, events, stats, (), [])
        async with client.op():
            # The hints first (see the module docstring): another slot, perhaps
            # another node, so calls of their own.
            if due is not None:
                await client.r.zadd(TIMERS, {session.id: due}, lt=True)
            if effect_due is not None:
                await client.r.zadd(EFFECTS, {session.id: effect_due}, lt=True)
            previous = await client.eval(
                scripts.SAVE_SHARDED if self.sharded else scripts.SAVE, keys, args
            )
        if isinstance(previous, list):
            return self._moved(session.id, previous)
        self.cache.put(stored, events)
        try:
            async with client.op():
                await client.eval(
                    scripts.SAVE_GLOBAL,
                    [TIMERS, ACTIVE, ENDED, COUNTERS, TVER, *_OUTBOX_INDEXES],
                    [
                        session.id,
                        stored.version,
                        _or_blank(due),
                        "1" if stored.terminal else "0",
                        stored.updated_at + self._settings.retention_after_end_ms,
                        *_outbox_args(stored),
                        self._admin_channel,
                        # Sharded: the admin copies are published from this slot.
                        len(events) if self.sharded else 0,
                        *(events if self.sharded else ()),
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
        claims: Sequence[RecordClaim],
        one_node_args: Sequence[Any],
    ) -> list[Any]:
        """ARGV of both save scripts (the layout is written at the top of store.lua);
        ``one_node_args``: save_one_node.lua's for the records it claims and the audit
        entry it adds."""
        due = stored.next_due()
        return [
            expected_version,
            _dump(stored),
            stored.version,
            stored.status,
            self._ttl(stored.terminal),
            self._settings.history_cap,
            session_channel(stored.id),
            self._admin_channel,
            stored.id,
            _or_blank(due),
            "1" if stored.terminal else "0",
            stored.updated_at + self._settings.retention_after_end_ms,
            len(events),
            *events,
            *_outbox_args(stored),
            len(claims),
            *one_node_args,
            *_stat_args(stats),
        ]

    async def history(self, session_id: str, since: int) -> list[bytes] | None:
        if not session_id:
            return None
        async with self._client.op():
            held = await self._client.eval(scripts.HISTORY, session_keys(session_id), [since])
        return None if held is None else list(held)

    async def list_sessions(self, active_only: bool, limit: int) -> list[Session]:
        return await self._list(ACTIVE if active_only else ORDER, limit)

    async def list_review(self, limit: int) -> list[Session]:
        return await self._list(REVIEW, limit)

    async def list_with_effects(self, pending_only: bool, limit: int) -> list[Session]:
        return await self._list(PENDING if pending_only else OUTBOX, limit)

    async def oldest_pending_effect(self) -> int | None:
        async with self._client.op():
            oldest: Any = await self._client.r.zrange(PENDING, 0, 0, withscores=True)
        return int(oldest[0][1]) if oldest else None

    async def _list(self, index: str, limit: int) -> list[Session]:
        """The sessions of ``index``, highest score first, skipping any that expired."""
        if limit <= 0:
            return []
        client = self._client
        out: list[Session] = []
        start = 0
        async with client.op():
            for _ in range(LIST_PAGES):
                want = limit - len(out)
                page: Any = await client.r.zrevrange(index, start, start + want - 1)
                ids = [i.decode() for i in page]
                if not ids:
                    break
                async with client.r.pipeline(transaction=False) as pipe:
                    for session_id in ids:
                        pipe.hget(session_keys(session_id)[0], "r")
                    records = await pipe.execute()
                gone = [sid for sid, raw in zip(ids, records, strict=True) if raw is None]
                out += [_load(raw) for raw in records if raw is not None]
                # The session keys expired before their index entries were purged:
                # unindex them (the remaining entries move up by as many places).
                start += len(ids) - len(gone)
                if gone:
                    await client.eval(scripts.FORGET, _FORGET_KEYS, gone)
                if len(out) >= limit or len(ids) < want:
                    break
        return out

    async def counters(self) -> dict[str, int]:
        async with self._client.op():
            async with self._client.r.pipeline(transaction=False) as pipe:
                pipe.hgetall(COUNTERS)
                pipe.zcard(REVIEW)
                raw, flagged = await pipe.execute()
        counters = {name.decode(): int(value) for name, value in raw.items()}
        return with_review_count(counters, int(flagged))

    async def forget_counters(self, names: Sequence[str]) -> None:
        if not names:
            return
        async with self._client.op():
            await self._client.r.hdel(COUNTERS, *names)

    # Timers -----------------------------------------------------------------

    async def claim_due(self, now: int, limit: int, lease_ms: int) -> list[str]:
        s = self._settings
        client = self._client
        # Generous: no live session is older than its ttl, a last attempt and retention.
        cutoff = now - 2 * (s.session_ttl_ms + s.attempt_timeout_ms + s.retention_after_end_ms)
        async with client.op():
            claimed, purged = await client.eval(
                scripts.CLAIM,
                [TIMERS, ENDED, ORDER, ACTIVE, TVER, *_OUTBOX_INDEXES],
                [now, max(0, limit), now + lease_ms, PURGE_BATCH, cutoff],
            )
            ids = [i.decode() for i in claimed]
            for raw in purged:
                # Deleted only if still not kept (see purge.lua): never a refund saved
                # since the claim unindexed it.
                if not await client.eval(scripts.PURGE, session_keys(raw.decode()), []):
                    await self._restore(raw.decode())
            async with client.r.pipeline(transaction=False) as pipe:
                for session_id in ids:
                    pipe.exists(session_keys(session_id)[0])
                exists = await pipe.execute() if ids else []
            gone = [sid for sid, held in zip(ids, exists, strict=True) if not held]
            if gone:
                # Expired while their timer was still set: nothing to fire, ever.
                await client.eval(scripts.FORGET, _FORGET_KEYS, gone)
            return [sid for sid, held in zip(ids, exists, strict=True) if held]

    async def _restore(self, session_id: str) -> None:
        """A session the purge found kept: claim.lua had taken it out of every index,
        and a save since made it owe an effect or need review (a late success's
        refund), or on Cluster a second step late or lost had left it in ``ended``
        (save_global.lua's ``ended`` is not versioned). Its entries are written back
        from its record, so that its effects are tried, its timer fires and it is
        listed; the earliest due time wins, so a newer save's is never pushed back."""
        session = await self.load(session_id)
        if session is None:
            return
        effect, pending, outbox, review, _ = _outbox_args(session)
        due = session.next_due()
        r = self._client.r
        async with self._client.op():
            await r.zadd(ORDER, {session_id: session.created_at}, nx=True)
            if due is not None:
                await r.zadd(TIMERS, {session_id: due}, lt=True)
            if effect != "":
                await r.zadd(EFFECTS, {session_id: effect}, lt=True)
            for key, score in ((PENDING, pending), (OUTBOX, outbox), (REVIEW, review)):
                if score != "":
                    await r.zadd(key, {session_id: score}, nx=True)

    async def claim_effects(self, now: int, limit: int, lease_ms: int) -> list[str]:
        if limit <= 0:
            return []
        client = self._client
        async with client.op():
            claimed = await client.eval(
                scripts.CLAIM_EFFECTS, [EFFECTS], [now, limit, now + lease_ms]
            )
            ids = [i.decode() for i in claimed]
            if not ids:
                return []
            async with client.r.pipeline(transaction=False) as pipe:
                for session_id in ids:
                    pipe.exists(session_keys(session_id)[0])
                exists = await pipe.execute()
            gone = [sid for sid, held in zip(ids, exists, strict=True) if not held]
            if gone:
                await client.eval(scripts.FORGET, _FORGET_KEYS, gone)
        return [sid for sid, held in zip(ids, exists, strict=True) if held]

    async def schedule_effects(self, session_id: str, due: int | None) -> None:
        await self._schedule(EFFECTS, session_id, due)

    async def schedule(self, session_id: str, due: int | None) -> None:
        await self._schedule(TIMERS, session_id, due)

    async def _schedule(self, index: str, session_id: str, due: int | None) -> None:
        if not session_id:
            return
        client = self._client
        async with client.op():
            if due is None:
                await client.r.zrem(index, session_id)
                return
            if await client.r.exists(session_keys(session_id)[0]):
                await client.r.zadd(index, {session_id: due})

    # Records ----------------------------------------------------------------

    async def put_if_absent(self, key: str, value: bytes, ttl_ms: int) -> bytes | None:
        async with self._client.op():
            held = await self._client.eval(
                scripts.PUT_IF_ABSENT, [record_key(key)], [value, ttl_ms]
            )
        return held  # type: ignore[no-any-return]

    async def claim(
        self,
        key: str,
        value: bytes,
        ttl_ms: int,
        unless: str | None = None,
        also: tuple[str, bytes] | None = None,
    ) -> Claim | None:
        """``RecordStore.claim`` in one script; None on Cluster, where the records
        live in other slots and the caller makes the calls one by one. The answer of
        the same claim made by a save (``save``'s ``claims``) is given once without
        asking again: the record was claimed then, in the save's script."""
        if self._client.cluster:
            return None
        if also is None:
            held = self._claimed.pop(record_key(key), None)
            if held is not None and held[0] == RecordClaim(key, value, ttl_ms, unless):
                return held[1]
        keys = [record_key(key)]
        if unless is not None:
            keys.append(record_key(unless))
        if also is not None:
            keys.append(record_key(also[0]))
        args = [
            value,
            ttl_ms,
            also[1] if also else b"",
            int(unless is not None),
            int(also is not None),
        ]
        async with self._client.op():
            reply = await self._client.eval(scripts.CLAIM_RECORD, keys, args)
        return _claim_reply(reply)

    def _hold(self, made: RecordClaim, answer: Claim) -> None:
        held = self._claimed
        held[record_key(made.key)] = (made, answer)
        while len(held) > CLAIMS_HELD:
            held.popitem(last=False)

    # A command's records (its idempotency answer, the sandbox's ledger) on the state
    # changes' connection (``Client.call``): an answer's SET was a pool command through
    # redis-py, about a third dearer, once per command with a key.
    async def put(self, key: str, value: bytes, ttl_ms: int) -> None:
        async with self._client.op():
            if ttl_ms > 0:
                await self._client.call("SET", record_key(key), value, "PX", ttl_ms)
            else:
                await self._client.call("DEL", record_key(key))  # expired at once, as in memory

    async def get(self, key: str) -> bytes | None:
        async with self._client.op():
            held: Any = await self._client.call("GET", record_key(key))
        return held  # type: ignore[no-any-return]

    async def delete(self, key: str) -> None:
        async with self._client.op():
            await self._client.call("DEL", record_key(key))
