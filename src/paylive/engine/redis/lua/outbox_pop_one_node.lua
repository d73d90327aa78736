-- One node: pop the head if it is ARGV[1], and unindex an empty outbox.
-- KEYS: o, the outbox index. ARGV: item, id. Returns the length left or -1.
local head = redis.call('LINDEX', KEYS[1], 0)
if not head then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return -1
end
if head ~= ARGV[1] then
  return -1
end
redis.call('LPOP', KEYS[1])
local left = redis.call('LLEN', KEYS[1])
if left == 0 then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return left
