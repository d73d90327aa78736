-- KEYS: s, h. ARGV: since.
-- The events after ``since``; nil when the session is gone or any of them was
-- trimmed away (then the caller sends a snapshot, never a partial replay).
local n = redis.call('HGET', KEYS[1], 'n')
if not n then
  return false
end
n = tonumber(n)
local first = n - redis.call('LLEN', KEYS[2]) + 1
local since = tonumber(ARGV[1])
if since + 1 < first then
  return false
end
if since >= n then
  return {}
end
return redis.call('LRANGE', KEYS[2], since + 1 - first, -1)
