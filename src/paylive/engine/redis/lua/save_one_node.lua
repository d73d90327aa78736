-- One node only (every key on the same server): after store.lua, the work of
-- save_global.lua in the same atomic script, so a save is one round trip and
-- counters, indexes, the timer and the outbox's due time can never lag behind the
-- session. No tver: that version guard orders Cluster's two steps, and here there is
-- one.
-- KEYS: s, h, timers, active, ended, counters, tver, effects, outbox, pending, review,
-- then for each record to claim its key and, when it has one, its blocker's, then the
-- audit trail of every session when the save records a staff or shop action.
-- ARGV: see store.lua; each record to claim has three: value, ttl_ms, '1' when a
-- blocker key follows its key in KEYS (else '0'); with the audit trail's key, its
-- entry and the count of entries it keeps follow the records' (before the stats).
-- Returns {'ok', one reply per record claimed}, each as claim_record.lua's: {1} the
-- blocker holds a value, {0, held} the record holds one, {0} stored.
local m = tonumber(ARGV[fx + 5])
local reply = {'ok'}
local k = 12
for j = 0, m - 1 do
  local a = fx + 6 + 3 * j
  local record = KEYS[k]
  k = k + 1
  local blocked = false
  if ARGV[a + 2] == '1' then
    blocked = redis.call('EXISTS', KEYS[k]) == 1
    k = k + 1
  end
  if blocked then
    reply[#reply + 1] = {1}
  else
    local held = redis.call('GET', record)
    if held then
      reply[#reply + 1] = {0, held}
    else
      if tonumber(ARGV[a + 1]) > 0 then
        redis.call('SET', record, ARGV[a], 'PX', ARGV[a + 1])
      end
      reply[#reply + 1] = {0}
    end
  end
end
local stats = fx + 6 + 3 * m
if KEYS[k] then
  -- The action's entry joins the trail of every session in the save that records it
  -- in the session: a worker that dies after the save cannot leave it out.
  redis.call('LPUSH', KEYS[k], ARGV[stats])
  redis.call('LTRIM', KEYS[k], 0, tonumber(ARGV[stats + 1]) - 1)
  stats = stats + 2
end
for i = stats, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[6], ARGV[i], ARGV[i + 1])
end
if ARGV[11] == '1' then
  redis.call('ZREM', KEYS[4], id)
  if ARGV[fx + 4] ~= '' then
    redis.call('ZREM', KEYS[5], id)  -- kept while its outbox owes anything or it awaits review
  else
    redis.call('ZADD', KEYS[5], 'NX', ARGV[12], id)
  end
end
-- In none of the effects, pending and review indexes before this save (x is the
-- version it replaces, see store.lua): nothing to remove from them.
local was_out = cur[4] == cur[1]
local function place(key, score, skip)
  if score ~= '' then
    redis.call('ZADD', key, score, id)
  elseif not skip then
    redis.call('ZREM', key, id)
  end
end
place(KEYS[3], ARGV[10], false)
place(KEYS[8], ARGV[fx], was_out)
place(KEYS[10], ARGV[fx + 1], was_out)
if ARGV[fx + 2] ~= '' then
  redis.call('ZADD', KEYS[9], 'NX', ARGV[fx + 2], id)
end
if ARGV[fx + 3] ~= '' then
  redis.call('ZADD', KEYS[11], 'NX', ARGV[fx + 3], id)
elseif not was_out then
  redis.call('ZREM', KEYS[11], id)
end
return reply
