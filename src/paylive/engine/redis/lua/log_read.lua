-- The log entries after a cursor. KEYS: log, records. ARGV: after, limit.
-- Returns {cursor, record, ...}.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. ARGV[1], '+inf', 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {}
for i = 1, #ids, 2 do
  local record = redis.call('HGET', KEYS[2], ids[i])
  if record then
    table.insert(out, ids[i + 1])
    table.insert(out, record)
  end
end
return out
