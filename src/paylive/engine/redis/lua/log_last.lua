-- The highest cursor given, for a read after ARGV[1]. A counter below the cursor read
-- after, or not there while one is asked after, lost cursors it gave (a shop holds one)
-- and starts again from the clock (log_floor.lua), so that the events given from now
-- on are above the shop's cursor. KEYS: next. ARGV: after. Returns the counter.
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
local after = tonumber(ARGV[1])
if held < after then
  held = math.max(held, floor_cursor())
  set_counter(KEYS[1], held)
end
return held
