-- A new session's own keys (its slot).
-- KEYS: s, h. ARGV: record, version, status, ttl_ms.
redis.call('DEL', KEYS[1], KEYS[2])
-- x: this version is in none of the outbox and review indexes (see store.lua).
redis.call('HSET', KEYS[1], 'r', ARGV[1], 'v', ARGV[2], 'st', ARGV[3], 'n', 0, 'x', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
