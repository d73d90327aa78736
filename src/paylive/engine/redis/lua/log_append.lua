-- Append to the events log, once per event id: an id already held keeps its cursor.
-- KEYS: log, records, times, next. ARGV: highest cursor this worker was given (0: none),
-- then id, created, record, ... Returns the cursors.
local given = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  local cursor = redis.call('ZSCORE', KEYS[1], id)
  if cursor then
    cursor = tonumber(cursor)
  else
    cursor = redis.call('INCR', KEYS[4])
    -- 1: the counter was not there (a new or emptied Redis); at or below a cursor this
    -- worker was given: it went back (a replica that lost the tail). One INCR otherwise.
    if cursor == 1 or cursor <= given then
      cursor = math.max(floor_cursor(), given) + 1
      set_counter(KEYS[4], cursor)
    end
    redis.call('ZADD', KEYS[1], string.format('%.0f', cursor), id)
    redis.call('HSET', KEYS[2], id, ARGV[i + 2])
    redis.call('HSET', KEYS[3], id, ARGV[i + 1])
  end
  table.insert(out, cursor)
end
return out
