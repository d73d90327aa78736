-- A session's last state, not only as its last merchant event carried it (docs/
-- protocol.md section 6): the version of the save a row was written from (0 for a
-- merchant event's copy), so that an older copy never replaces a newer one of the same
-- seq, and what staff see of the session besides the public view (effects, review,
-- audit), null until a snapshot of it is archived.

ALTER TABLE paylive_sessions
    ADD COLUMN version    bigint NOT NULL DEFAULT 0,
    ADD COLUMN staff_body text;
