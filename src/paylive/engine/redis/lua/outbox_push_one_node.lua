-- One node: append to a session's merchant outbox and index it, due at once unless
-- it is leased or waiting (NX). KEYS: o, the outbox index. ARGV: ttl ms, id, items.
for i = 3, #ARGV do
  redis.call('RPUSH', KEYS[1], ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], 'NX', 0, ARGV[2])
return 1
