-- One row per claim of a job: who ran it, when, and how it ended (shown on the run page).
CREATE TABLE attempts (
    job_id        uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt       integer NOT NULL,
    worker        text NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz,
    outcome       text CHECK (outcome IN ('queued', 'succeeded', 'failed', 'cancelled')),
    failure_kind  text CHECK (failure_kind IN ('infrastructure', 'diverged', 'invalid', 'internal')),
    error         text,
    PRIMARY KEY (job_id, attempt)
);

-- Dashboard sessions. The cookie holds a random secret; only its SHA-256 is stored, so a
-- leaked table opens no session. `csrf` is the token the session's forms must send back.
CREATE TABLE sessions (
    secret_sha256  bytea PRIMARY KEY,
    csrf           text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL
);
CREATE INDEX sessions_expiry ON sessions (expires_at);
