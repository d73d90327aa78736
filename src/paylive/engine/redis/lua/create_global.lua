-- A new session's global entries (the {_global} slot), and its admin notice (after
-- plain.lua or sharded.lua: with sharded pub/sub the admin channel is in this slot).
-- KEYS: order, active, timers, counters, tver, ended.
-- ARGV: id, created_at, due or '', version, admin channel, notice, then stat
-- name/delta pairs.
-- The creation score is created_at, but strictly above the newest one held, so that
-- the index keeps insertion order (as the memory engine does) even within one ms.
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
redis.call(SHARDED and 'SPUBLISH' or 'PUBLISH', ARGV[5], ARGV[6])
return 1
