-- Claim sessions whose outbox is due, each leased until the lease end.
-- KEYS: the outbox index. ARGV: now, limit, lease end.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[3], id)
end
return due
