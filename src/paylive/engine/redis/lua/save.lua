-- Cluster: after store.lua, on the session's slot only; the global keys follow in
-- save_global.lua. Returns the previous status (see store.lua for a version that moved).
return previous
