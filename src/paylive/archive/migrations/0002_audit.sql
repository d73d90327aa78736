-- The audit trail (docs/protocol.md section 8.2): what staff and the shop did, with
-- who, when, from which address and on which session. Kept as long as sessions are.

CREATE TABLE paylive_audit (
    id         text   PRIMARY KEY,
    at         bigint NOT NULL,  -- epoch ms
    staff      text   NOT NULL,  -- a staff name, or "merchant"
    action     text   NOT NULL,
    session_id text,             -- null for an action on no session (sandbox switches)
    body       text   NOT NULL   -- the entry exactly as GET /api/admin/audit shows it
);
-- Searches by staff name, by session and by date, newest first; the purge by date.
CREATE INDEX paylive_audit_staff ON paylive_audit (staff, at DESC);
CREATE INDEX paylive_audit_session ON paylive_audit (session_id, at DESC);
CREATE INDEX paylive_audit_at ON paylive_audit (at DESC);
