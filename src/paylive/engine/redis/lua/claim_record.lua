-- One decision of a record store in one round trip (RecordStore.claim).
-- KEYS: the record, then (ARGV[4] == '1') the blocker, then (ARGV[5] == '1') the
-- companion record. ARGV: value, ttl_ms, companion value, has blocker, has companion.
-- Returns {1} when the blocker holds a value (nothing stored), {0, held} when the
-- record holds one, {0} when it was stored (and the companion, unless it was held).
local i = 2
if ARGV[4] == '1' then
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return {1}
  end
  i = i + 1
end
local held = redis.call('GET', KEYS[1])
if held then
  return {0, held}
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  if ARGV[5] == '1' then
    redis.call('SET', KEYS[i], ARGV[3], 'PX', ARGV[2], 'NX')
  end
end
return {0}
