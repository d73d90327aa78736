-- KEYS: the record. ARGV: value, ttl_ms. Returns the value held, or nil when stored.
local held = redis.call('GET', KEYS[1])
if held then
  return held
end
if tonumber(ARGV[2]) > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return false
