-- One node only (every key on the same server): after store.lua, the work of
-- save_global.lua in the same atomic script, so a save is one round trip and
-- counters, indexes and the timer can never lag behind the session.
-- KEYS: s, h, timers, active, ended, counters, tver. ARGV: see store.lua.
for i = last_event + 1, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[6], ARGV[i], ARGV[i + 1])
end
local ended = {}
for status in string.gmatch(ARGV[13], '%S+') do
  ended[status] = true
end
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
