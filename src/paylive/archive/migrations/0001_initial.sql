-- The archive of sessions, their durable events and the merchant events log.
-- Applied once, in a transaction, by paylive at start (archive/schema.py).

CREATE TABLE paylive_sessions (
    id           text    PRIMARY KEY,
    order_id     text    NOT NULL,
    status       text    NOT NULL,
    amount       bigint  NOT NULL,
    currency     text    NOT NULL,
    needs_review boolean NOT NULL,
    created_at   bigint  NOT NULL,  -- epoch ms, as on the wire
    updated_at   bigint  NOT NULL,
    seq          integer NOT NULL,
    body         text    NOT NULL   -- the session exactly as GET /api/sessions/{id} shows it
);
-- The dashboard's searches: by order id, by date range, by status within a date range;
-- and the retention purge by updated_at.
CREATE INDEX paylive_sessions_order ON paylive_sessions (order_id, created_at DESC);
CREATE INDEX paylive_sessions_created ON paylive_sessions (created_at DESC, id DESC);
CREATE INDEX paylive_sessions_status ON paylive_sessions (status, created_at DESC);
CREATE INDEX paylive_sessions_updated ON paylive_sessions (updated_at);

-- Every durable event of a session (state, retry_prompt), as sent on its channel.
CREATE TABLE paylive_session_events (
    session_id text    NOT NULL REFERENCES paylive_sessions (id) ON DELETE CASCADE,
    seq        integer NOT NULL,
    type       text    NOT NULL,
    ts         bigint  NOT NULL,
    body       text    NOT NULL,
    PRIMARY KEY (session_id, seq)
);

-- The merchant events log (GET /api/events): the cursor is the one the engine gave.
CREATE TABLE paylive_merchant_events (
    cursor     bigint PRIMARY KEY,
    id         text   NOT NULL UNIQUE,
    session_id text   NOT NULL,
    type       text   NOT NULL,
    created    bigint NOT NULL,
    body       text   NOT NULL
);
CREATE INDEX paylive_merchant_events_session ON paylive_merchant_events (session_id, cursor);
CREATE INDEX paylive_merchant_events_created ON paylive_merchant_events (created);

-- How far the archive has followed the engine's log.
CREATE TABLE paylive_archive_mark (
    name   text   PRIMARY KEY,
    cursor bigint NOT NULL
);
INSERT INTO paylive_archive_mark (name, cursor) VALUES ('log', 0);
