-- KEYS: effects. ARGV: now, limit, lease end. Returns the claimed ids.
-- Due sessions are pushed to the lease end in the same step, so that exactly one
-- caller gets each, as claim.lua does for timers.
local claimed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(claimed) do
  redis.call('ZADD', KEYS[1], ARGV[3], id)
end
return claimed
