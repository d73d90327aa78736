-- A new session's own keys (its slot); 0, and nothing written, when the session is
-- stored already (a keyed create still on its way after its retry made the session).
-- KEYS: s, h. ARGV: record, version, status, ttl_ms.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
-- A history left without its session (the session key expired first) is not this one's.
redis.call('DEL', KEYS[2])
-- x: this version is in none of the outbox and review indexes (see store.lua).
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'v', ARGV[2], 'st', ARGV[3], 'n', 0, 'x', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
