-- Store a delivery record; open ones all kept, done ones capped at ARGV[5].
-- KEYS: deliveries, open, done. ARGV: id, record, '1' open / '0' done, at, cap.
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  local extra = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[5])
  if extra > 0 then
    local old = redis.call('ZRANGE', KEYS[3], 0, extra - 1)
    for _, id in ipairs(old) do
      redis.call('ZREM', KEYS[3], id)
      redis.call('HDEL', KEYS[1], id)
    end
  end
end
return 1
