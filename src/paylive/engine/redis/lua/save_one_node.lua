-- One node only (every key on the same server): after store.lua, the work of
-- save_global.lua in the same atomic script, so a save is one round trip and
-- counters, indexes, the timer and the outbox's due time can never lag behind the
-- session.
-- KEYS: s, h, timers, active, ended, counters, tver, effects, outbox, pending, review.
-- ARGV: see store.lua.
for i = fx + 5, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[6], ARGV[i], ARGV[i + 1])
end
if ARGV[11] == '1' then
  redis.call('ZREM', KEYS[4], id)
  if ARGV[fx + 4] ~= '' then
    redis.call('ZREM', KEYS[5], id)  -- kept while its outbox owes anything or it awaits review
  else
    redis.call('ZADD', KEYS[5], 'NX', ARGV[12], id)
  end
end
local function place(key, score)
  if score == '' then
    redis.call('ZREM', key, id)
  else
    redis.call('ZADD', key, score, id)
  end
end
place(KEYS[3], ARGV[10])
place(KEYS[8], ARGV[fx])
place(KEYS[10], ARGV[fx + 1])
if ARGV[fx + 2] ~= '' then
  redis.call('ZADD', KEYS[9], 'NX', ARGV[fx + 2], id)
end
if ARGV[fx + 3] == '' then
  redis.call('ZREM', KEYS[11], id)
else
  redis.call('ZADD', KEYS[11], 'NX', ARGV[fx + 3], id)
end
redis.call('HSET', KEYS[7], id, ARGV[3])
return previous
