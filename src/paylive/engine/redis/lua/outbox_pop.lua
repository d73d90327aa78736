-- Cluster: pop the head if it is ARGV[1]. KEYS: o. Returns the length left, -1 when
-- the item was not the head, -2 when the outbox is empty.
local head = redis.call('LINDEX', KEYS[1], 0)
if not head then
  return -2
end
if head ~= ARGV[1] then
  return -1
end
redis.call('LPOP', KEYS[1])
return redis.call('LLEN', KEYS[1])
