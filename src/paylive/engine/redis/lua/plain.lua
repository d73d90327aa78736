-- Plain pub/sub: PUBLISH (one node, or Cluster's bus to every node).
local SHARDED = false
