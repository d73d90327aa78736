-- KEYS: timers, ended, order, active, tver, then the outbox indexes (effects,
-- outbox, pending, review). ARGV: now, limit, lease end, purge batch, index cutoff.
-- Returns {claimed ids, purged ids}.
-- First the purge, as the memory engine does it: ended sessions whose retention ran
-- out at ``now`` are unindexed here and their keys (in other slots) deleted by the
-- caller. Index entries older than the cutoff can only be leftovers of a crash.
-- Then the claim: due timers are pushed to the lease end in the same step, so that
-- exactly one caller gets each.
-- A session flagged for review is never purged (a save that flags it takes it out
-- of ``ended``; this guards an entry left from before): it leaves ``ended`` only.
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[4])
local purged = {}
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[2], id)
  if not redis.call('ZSCORE', KEYS[#KEYS], id) then
    purged[#purged + 1] = id
  end
end
for _, id in ipairs(purged) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('ZREM', KEYS[4], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[5], id)
  for k = 6, #KEYS do
    redis.call('ZREM', KEYS[k], id)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[5])
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[5])
local claimed = {}
if tonumber(ARGV[2]) > 0 then
  claimed = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
  for _, id in ipairs(claimed) do
    redis.call('ZADD', KEYS[1], ARGV[3], id)
  end
end
return {claimed, purged}
