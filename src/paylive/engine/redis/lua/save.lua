-- Cluster: after store.lua, on the session's slot only; the global keys (and the
-- outbox index) follow in save_global.lua. KEYS: s, h, o (the merchant outbox).
-- Returns the previous status, or nil when the version moved.
for i = first_item, last_item do
  redis.call('RPUSH', KEYS[3], ARGV[i])
end
if m > 0 then
  redis.call('PEXPIRE', KEYS[3], ARGV[fx + 5])
end
return previous
