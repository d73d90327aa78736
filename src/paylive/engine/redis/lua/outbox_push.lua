-- Cluster: append to a session's merchant outbox (the index follows in a call of its own).
-- KEYS: o. ARGV: ttl ms, then the items.
for i = 2, #ARGV do
  redis.call('RPUSH', KEYS[1], ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
