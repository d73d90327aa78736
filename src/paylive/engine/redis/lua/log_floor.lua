-- The head of the scripts that give or move the events log's cursors.
-- A cursor must never be given twice, also once Redis lost the counter (a restart
-- without persistence: it is gone) or the cursors last given (a failover to a replica
-- that lost the tail: it is behind), since a shop that read up to one of them asks
-- after it and would skip every new event given a cursor at or below it. Nothing in
-- Redis tells what it lost, so a counter made or found behind starts from the clock:
-- epoch ms x 1000, above any cursor given before unless cursors were given faster
-- than 1,000 a millisecond (and within JSON's exact integers, 2^53, until 2255).
local function floor_cursor()
  local now = redis.call('TIME')
  return tonumber(now[1]) * 1000000 + math.floor(tonumber(now[2]) / 1000) * 1000
end

-- Set the counter to ``cursor`` (a Lua number, written in full: tostring would round
-- it to 14 digits).
local function set_counter(key, cursor)
  redis.call('SET', key, string.format('%.0f', cursor))
end
