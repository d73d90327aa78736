-- Give cursors above ARGV[1] from now on. KEYS: next. ARGV: at least.
if tonumber(redis.call('GET', KEYS[1]) or '0') < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return 1
