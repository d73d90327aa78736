-- The head of both save scripts (after plain.lua or sharded.lua; save.lua or
-- save_one_node.lua follow it): compare
-- the version (when it moved: nothing changed, and the reply is a one-element array
-- holding the current record, or nil when the session is gone, so that the caller
-- can decide again without another round trip), store, append to the capped history,
-- publish; leaves the previous status in ``previous`` and the index of the outbox
-- arguments in ``fx``.
-- KEYS[1], KEYS[2]: the session's s and h.
-- ARGV, the same for both save scripts:
--   1 expected version, 2 record, 3 new version, 4 status, 5 ttl_ms, 6 history cap,
--   7 session channel, 8 admin channel, 9 id, 10 due or '', 11 terminal '1'/'0',
--   12 purge time, 13 event count n, then the n events, then five outbox arguments
--   (fx .. fx + 3: the due time of its outbox, the oldest pending effect's creation
--   time, the first effect's creation time, the time the session was flagged for
--   review, each '' when there is none; fx + 4: '1' when the session is kept: its
--   outbox owes anything, a pending effect or a merchant event, or it is flagged
--   for review, else ''), then (fx + 5) the count m of records to claim with the
--   save and their 3m arguments (save_one_node.lua; 0 on Cluster), then, only
--   when save_one_node.lua adds an audit entry, that entry and the trail's kept
--   count, then stat name/delta pairs.
-- The record's field x holds the version of a save that left the session out of the
-- effects, pending and review indexes (else ''), so that the next save on one node
-- need not remove it from indexes it is not in. A version, not a flag: a save that
-- does not write x (an older worker's, during a rolling deploy) leaves it stale, and
-- a stale x is taken for "perhaps in any of them".
local cur = redis.call('HMGET', KEYS[1], 'v', 'st', 'n', 'x')
if cur[1] ~= ARGV[1] then
  return {redis.call('HGET', KEYS[1], 'r')}
end
local id = ARGV[9]
local n = tonumber(ARGV[13])
local first_event = 14
local last_event = 13 + n
local fx = last_event + 1
local out = ''
if ARGV[fx] == '' and ARGV[fx + 1] == '' and ARGV[fx + 3] == '' and ARGV[fx + 4] == '' then
  out = ARGV[3]
end
if n > 0 then
  -- The events counted in the same HSET (n was read with the version) and appended
  -- in one RPUSH: no HINCRBY, and one RPUSH for all of them.
  redis.call('HSET', KEYS[1], 'r', ARGV[2], 'v', ARGV[3], 'st', ARGV[4],
    'n', (tonumber(cur[3]) or 0) + n, 'x', out)
  redis.call('RPUSH', KEYS[2], unpack(ARGV, first_event, last_event))
  local cap = tonumber(ARGV[6])
  if cap > 0 then
    redis.call('LTRIM', KEYS[2], -cap, -1)
  else
    redis.call('DEL', KEYS[2])
  end
else
  redis.call('HSET', KEYS[1], 'r', ARGV[2], 'v', ARGV[3], 'st', ARGV[4], 'x', out)
end
if ARGV[fx + 4] ~= '' then
  -- The outbox owes the provider a call or the shop an event, or a person has not
  -- resolved its review: kept until then.
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
for i = first_event, last_event do
  if SHARDED then
    -- The session's channel is in this slot; the admin copies go out from the
    -- global slot in save_global.lua.
    redis.call('SPUBLISH', ARGV[7], ARGV[i])
  else
    redis.call('PUBLISH', ARGV[7], ARGV[i])
    redis.call('PUBLISH', ARGV[8], ARGV[i])
  end
end
local previous = cur[2] or ''
