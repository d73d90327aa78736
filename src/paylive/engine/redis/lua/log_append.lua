-- Append to the events log, once per event id: an id already held keeps its cursor.
-- KEYS: log, records, times, next. ARGV: id, created, record, ... Returns the cursors.
local out = {}
for i = 1, #ARGV, 3 do
  local id = ARGV[i]
  local cursor = redis.call('ZSCORE', KEYS[1], id)
  if not cursor then
    cursor = redis.call('INCR', KEYS[4])
    redis.call('ZADD', KEYS[1], cursor, id)
    redis.call('HSET', KEYS[2], id, ARGV[i + 2])
    redis.call('HSET', KEYS[3], id, ARGV[i + 1])
  end
  table.insert(out, tonumber(cursor))
end
return out
