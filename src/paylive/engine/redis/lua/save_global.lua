-- Cluster: the second step of a save that won its compare-and-set, on the
-- {_global} slot (see the trade-off in the package docstring).
-- KEYS: timers, active, ended, counters, tver, effects, outbox, pending, review.
-- ARGV: id, version, due or '', terminal '1'/'0', purge time, then the five outbox
-- arguments of store.lua (6 .. 10), then the admin channel (11) and the count n of
-- events (12) to SPUBLISH on it (sharded pub/sub; 0 otherwise), the n events, then
-- stat pairs.
local id = ARGV[1]
local n = tonumber(ARGV[12])
for i = 13, 12 + n do
  redis.call('SPUBLISH', ARGV[11], ARGV[i])
end
for i = 13 + n, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[4], ARGV[i], ARGV[i + 1])
end
if ARGV[4] == '1' then
  redis.call('ZREM', KEYS[2], id)
  if ARGV[10] ~= '' then
    redis.call('ZREM', KEYS[3], id)  -- kept while its outbox owes anything or it awaits review
  else
    redis.call('ZADD', KEYS[3], 'NX', ARGV[5], id)
  end
end
-- Guarded by the version: two workers' writes arriving out of order cannot leave a
-- stale due time or index entry in place of a newer one.
local seen = tonumber(redis.call('HGET', KEYS[5], id) or '-1')
if tonumber(ARGV[2]) > seen then
  local function place(key, score)
    if score == '' then
      redis.call('ZREM', key, id)
    else
      redis.call('ZADD', key, score, id)
    end
  end
  place(KEYS[1], ARGV[3])
  place(KEYS[6], ARGV[6])
  place(KEYS[8], ARGV[7])
  if ARGV[8] ~= '' then
    redis.call('ZADD', KEYS[7], 'NX', ARGV[8], id)
  end
  if ARGV[9] == '' then
    redis.call('ZREM', KEYS[9], id)
  else
    redis.call('ZADD', KEYS[9], 'NX', ARGV[9], id)
  end
  redis.call('HSET', KEYS[5], id, ARGV[2])
end
return 1
