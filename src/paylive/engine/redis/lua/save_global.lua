-- Cluster: the second step of a save that won its compare-and-set, on the
-- {_global} slot (see the trade-off in the package docstring).
-- KEYS: timers, active, ended, counters, tver.
-- ARGV: id, version, due or '', terminal '1'/'0', purge time or '', then stat pairs.
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
