-- Before create_global.lua, when create.lua found the session stored already (Cluster):
-- its own create's reply may have been lost before that create's global step ran. The
-- step is made now only if it never was: every global step writes the session's
-- version to tver (create_global.lua, save_global.lua), so an entry there means done.
if redis.call('HEXISTS', KEYS[5], ARGV[1]) == 1 then
  return 0
end
