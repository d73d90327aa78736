-- Cluster: after store.lua, on the session's slot only; the global keys follow in
-- save_global.lua. Returns the previous status, or nil when the version moved.
return previous
