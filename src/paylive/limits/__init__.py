"""A worker's limits on the work it takes: the door's count of commands in flight and
their shares (``admission``), the adaptive bound on them (``gradient``), and token
buckets per key (``buckets``). No HTTP here: ``web.admission`` answers the refusals."""
