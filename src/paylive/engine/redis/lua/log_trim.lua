-- Drop the oldest entries created before ARGV[1] with a cursor up to ARGV[2].
-- KEYS: log, records, times. ARGV: before ms, up to cursor, limit.
local head = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[3]) - 1, 'WITHSCORES')
local count = 0
for i = 1, #head, 2 do
  local id, cursor = head[i], tonumber(head[i + 1])
  local created = tonumber(redis.call('HGET', KEYS[3], id) or '0')
  if created >= tonumber(ARGV[1]) or cursor > tonumber(ARGV[2]) then
    break
  end
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  count = count + 1
end
return count
