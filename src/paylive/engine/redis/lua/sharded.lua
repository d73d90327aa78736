-- Sharded pub/sub (Cluster): SPUBLISH, on the node of the channel's slot only.
local SHARDED = true
