-- KEYS: the session's s and h. Deletes them unless the session is kept (no expiry:
-- its outbox owes anything, or it awaits review). claim.lua unindexed the session a
-- moment before, on another slot; a save in between that made it owe a refund (a
-- late success) persisted it, and this check is what keeps that refund from being
-- wiped. Returns 1 when deleted.
if redis.call('PTTL', KEYS[1]) == -1 then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
