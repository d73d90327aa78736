"""The Redis key schema: every key and channel name paylive uses, in one place.

A session's keys carry its id as a hash tag, so that one Lua script may touch them
all, also on Redis Cluster:

- ``paylive:{<id>}:s``, a hash: ``r`` the record (JSON of ``Session.to_record()``),
  ``v`` its version, ``st`` its status, ``n`` how many durable events were ever
  appended. The history then holds events ``n - LLEN + 1 .. n``, which is how
  ``history`` knows when it can no longer replay everything.
- ``paylive:{<id>}:h``, a list: the last ``history_cap`` durable events.

Both expire ``retention_after_end_ms`` after the session's last save once it is
terminal, and ``session_ttl_ms + retention_after_end_ms`` after it while it is active
(every save sets the expiry afresh); while the session's outbox holds a pending
effect or a merchant event not yet delivered, or while it is flagged for review,
they do not expire at all.

The global keys share the hash tag ``{_global}`` (one slot, so one script may update
them together): ``timers`` (zset id -> due ms), ``order`` and ``active`` (zsets
id -> creation score, newest last), ``ended`` (zset id -> purge time), ``counters``
(hash) and ``tver`` (hash id -> version of the last timer write). The outbox's:
``effects`` (zset id -> when an outbox item, an effect or a merchant event, is due,
claimed with a lease like ``timers``), ``outbox`` (id -> when its first effect was
decided), ``pending`` (id -> when its oldest pending effect was decided) and
``review`` (id -> when it was flagged ``needs_review``). The shop's: ``log`` (zset
event id -> cursor), ``logr`` (hash id -> record), ``logt`` (hash id -> created ms)
and ``logn`` (the last cursor given): the merchant events log, appended once per id
by one script, so cursors follow append order; ``dlv`` (hash event id -> delivery
record), ``dlvopen`` and ``dlvdone`` (zsets id -> last change): webhook deliveries,
the done ones capped; ``audit`` (a list, newest first, capped): the audit trail of
staff and shop actions. Records of ``put``/``get`` are plain strings
``paylive:rec:<key>`` with their own expiry. ``ready`` (a string that expires a minute
after it was last written) is readiness's probe: writing it is how a worker learns
that the node of the global slot still takes writes. On Cluster each other primary
that owns slots gets a probe key of its own, ``paylive:{_ready<n>}:ready``, the first
``n`` whose slot it owns (``ready_keys``).

Channels: ``paylive:{<id>}:ev`` per session (its hash tag puts it in the session's
slot, where sharded pub/sub publishes it), ``paylive:admin`` for the admin feed, or
``paylive:{_global}:admin`` with sharded pub/sub on Cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from redis.crc import key_slot

PREFIX = "paylive"
ADMIN_CHANNEL = f"{PREFIX}:admin".encode()
_G = f"{PREFIX}:{{_global}}"
TIMERS = f"{_G}:timers"
ORDER = f"{_G}:order"
ACTIVE = f"{_G}:active"
ENDED = f"{_G}:ended"
COUNTERS = f"{_G}:counters"
TVER = f"{_G}:tver"
EFFECTS = f"{_G}:effects"
OUTBOX = f"{_G}:outbox"
PENDING = f"{_G}:pending"
REVIEW = f"{_G}:review"
LOG, LOG_RECORDS, LOG_TIMES, LOG_NEXT = f"{_G}:log", f"{_G}:logr", f"{_G}:logt", f"{_G}:logn"
DELIVERIES, OPEN, DONE = f"{_G}:dlv", f"{_G}:dlvopen", f"{_G}:dlvdone"
READY = f"{_G}:ready"
# Sharded pub/sub (Cluster): SPUBLISH goes to the node of the channel's slot, so the
# admin channel lives in the global slot, where the second step of a save runs.
SHARDED_ADMIN_CHANNEL = f"{_G}:admin".encode()


def session_keys(session_id: str) -> list[str]:
    """The session's hash and history list."""
    # Both keys share the hash tag, whatever the id holds, because they share the
    # prefix up to the first "}" after "{" (an empty tag would not, hence the check
    # in the callers).
    return [f"{PREFIX}:{{{session_id}}}:s", f"{PREFIX}:{{{session_id}}}:h"]


def session_channel(session_id: str) -> bytes:
    return f"{PREFIX}:{{{session_id}}}:ev".encode()


def channel(session_id: str | None, sharded: bool = False) -> bytes:
    """The channel of a session, or with None the admin channel (with sharded pub/sub,
    the one in the global slot)."""
    if session_id is None:
        return SHARDED_ADMIN_CHANNEL if sharded else ADMIN_CHANNEL
    return session_channel(session_id)


# Enough tries for a primary that owns a single slot (16,384 slots, about one key in
# 16,384 lands there): past it that primary goes unprobed rather than the probe spinning.
_READY_TRIES = 1 << 18


def ready_keys(owner: Callable[[int], str | None], primaries: Collection[str]) -> dict[str, str]:
    """One probe key per primary, each in a slot that primary owns (``owner`` names the
    primary of a slot): the global slot's own ``READY`` for its primary, and for the
    others the first ``paylive:{_ready<n>}:ready`` that lands in one of theirs. The
    same keys every time while the slot map stands, so that probes overwrite them."""
    found: dict[str, str] = {}
    first = owner(key_slot(READY.encode()))
    if first is not None:
        found[first] = READY
    for n in range(_READY_TRIES):
        if len(found) >= len(primaries):
            break
        key = f"{PREFIX}:{{_ready{n}}}:ready"
        name = owner(key_slot(key.encode()))
        if name is not None and name not in found:
            found[name] = key
    return found


def record_key(key: str) -> str:
    return f"{PREFIX}:rec:{key}"


AUDIT = f"{_G}:audit"
