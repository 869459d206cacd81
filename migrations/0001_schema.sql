-- stepwise schema. Append-only: change it with a new migration, never by editing this one.

CREATE TABLE experiments (
    id          uuid PRIMARY KEY,
    name        text NOT NULL,
    spec        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE runs (
    id             uuid PRIMARY KEY,          -- UUIDv7: ordered by creation, the list cursor
    experiment_id  uuid REFERENCES experiments (id) ON DELETE CASCADE,
    label          text NOT NULL,             -- the model's (or configuration's) label
    name           text,
    tags           text[] NOT NULL DEFAULT '{}',
    arch           text NOT NULL,
    dataset        text NOT NULL,
    spec           jsonb NOT NULL,            -- the submitted RunSpec
    resolved_spec  jsonb,                     -- with the dataset identity, once training started
    analysis_plan  jsonb,                     -- which checkpoints are analysed, and how
    status         text NOT NULL,             -- the train job's state
    epochs         integer NOT NULL,
    epochs_done    integer NOT NULL DEFAULT 0,
    step           bigint NOT NULL DEFAULT 0,
    total_steps    bigint NOT NULL DEFAULT 0,
    progress_at    timestamptz,
    attempt_started_at   timestamptz,   -- for the ETA: when the current attempt started,
    attempt_start_step   bigint,        -- and at which step
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX runs_experiment ON runs (experiment_id);
CREATE INDEX runs_status ON runs (status);

CREATE TABLE checkpoints (
    id          uuid PRIMARY KEY,
    run_id      uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    attempt     integer NOT NULL,
    directory   text NOT NULL,                -- relative to the checkpoint store
    file_name   text NOT NULL,
    epoch       integer NOT NULL,
    batch       integer NOT NULL,
    step        bigint NOT NULL,
    sha256      text NOT NULL,
    size        bigint NOT NULL,
    removed     boolean NOT NULL DEFAULT false, -- deleted by the run's retention policy
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (directory, file_name)
);
CREATE INDEX checkpoints_run ON checkpoints (run_id, epoch, batch);

CREATE TABLE analyses (
    id              uuid PRIMARY KEY,
    run_id          uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    checkpoint_id   uuid NOT NULL REFERENCES checkpoints (id) ON DELETE CASCADE,
    epoch           integer NOT NULL,
    spec            jsonb NOT NULL,
    status          text NOT NULL,            -- the analyze job's state
    selected_alpha  double precision,
    notes           jsonb,
    examples        jsonb,
    seconds         double precision,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz
);
CREATE INDEX analyses_run ON analyses (run_id, epoch);

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('train', 'analyze')),
    run_id           uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    analysis_id      uuid REFERENCES analyses (id) ON DELETE CASCADE,
    state            text NOT NULL CHECK (state IN
                        ('queued', 'running', 'cancelling', 'succeeded', 'failed', 'cancelled')),
    attempt          integer NOT NULL DEFAULT 0,  -- claims so far; names the attempt directory
    failures         integer NOT NULL DEFAULT 0,  -- infrastructure failures so far
    max_attempts     integer NOT NULL,            -- retried while failures < max_attempts
    failure_kind     text CHECK (failure_kind IN ('infrastructure', 'diverged', 'invalid', 'internal')),
    last_error       text,
    lease_token      uuid,
    lease_expires_at timestamptz,
    worker           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX jobs_queue ON jobs (kind, created_at) WHERE state = 'queued';
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state IN ('running', 'cancelling');
CREATE INDEX jobs_run ON jobs (run_id);

-- Per-epoch training metrics. One row per (run, name, split, epoch, block): a resumed
-- attempt that repeats an epoch replaces its values instead of adding a second row.
CREATE TABLE metrics (
    run_id       uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name         text NOT NULL,
    split        text NOT NULL DEFAULT '',    -- '' for metrics without a split
    epoch        integer NOT NULL,
    block        text NOT NULL DEFAULT '',    -- '' for whole-network metrics
    block_index  integer,
    value        double precision NOT NULL,
    PRIMARY KEY (run_id, name, split, block, epoch)
);

CREATE TABLE analysis_records (
    analysis_id  uuid NOT NULL REFERENCES analyses (id) ON DELETE CASCADE,
    seq          integer NOT NULL,
    record       jsonb NOT NULL,              -- a domain::AnalysisRecord
    PRIMARY KEY (analysis_id, seq)
);

CREATE TABLE logs (
    id       bigserial PRIMARY KEY,
    run_id   uuid NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    job_id   uuid REFERENCES jobs (id) ON DELETE CASCADE,
    attempt  integer,
    at       timestamptz NOT NULL DEFAULT now(),
    level    text NOT NULL,
    message  text NOT NULL
);
CREATE INDEX logs_run ON logs (run_id, id);

CREATE TABLE idempotency_keys (
    key             text NOT NULL,
    route           text NOT NULL,
    request_sha256  text NOT NULL,
    status          integer NOT NULL,
    response        jsonb NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (route, key)
);
