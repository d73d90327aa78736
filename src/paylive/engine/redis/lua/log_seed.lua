-- Give cursors above ARGV[1] (the archive's mark) from now on: a counter that is not
-- there, or is below cursors the archive took from this log, lost cursors it gave, and
-- starts again from the clock (log_floor.lua). KEYS: next. ARGV: at least.
local held = redis.call('GET', KEYS[1])
local mark = tonumber(ARGV[1])
if not held or tonumber(held) < mark then
  set_counter(KEYS[1], math.max(floor_cursor(), mark))
end
return 1
