-- KEYS: tver, then every index (zsets) a session may be in. ARGV: ids whose session
-- keys are gone.
for i = 1, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  for k = 2, #KEYS do
    redis.call('ZREM', KEYS[k], ARGV[i])
  end
end
return 1
