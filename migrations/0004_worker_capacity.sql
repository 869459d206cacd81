-- What a job was found to need, per memory ({"gpu": MiB, "host": MiB}), from the workers
-- that refused it for want of memory: claims pass over jobs needing more than the claimant's
-- budget, so a job too large for one worker waits for a larger one.
ALTER TABLE jobs ADD COLUMN memory_needs jsonb NOT NULL DEFAULT '{}';

-- The workers that claimed jobs: what they take, the memory they compute in and its budget,
-- and when they last claimed or heartbeat. A refused job stays queued only while a worker
-- seen lately could take it; otherwise it fails as invalid.
CREATE TABLE workers (
    name        text PRIMARY KEY,
    kinds       text[] NOT NULL,
    memory      text NOT NULL CHECK (memory IN ('gpu', 'host')),
    budget_mib  bigint NOT NULL CHECK (budget_mib >= 0),
    seen_at     timestamptz NOT NULL DEFAULT now()
);
