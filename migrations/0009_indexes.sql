-- Indexes for the reads and deletes that would otherwise grow with the database.
--
-- The referencing side of the foreign keys that had none (Postgres indexes only the
-- referenced side): without them, reading an analysis joined to its job scans every job,
-- and deleting a run scans every job, analysis and log line once per analysis, checkpoint
-- and job it cascades to (1.5 s per run at 1,000 runs of 50 analyses each; 13 ms with them).
CREATE INDEX jobs_analysis ON jobs (analysis_id);
CREATE INDEX analyses_checkpoint ON analyses (checkpoint_id);
CREATE INDEX logs_job ON logs (job_id);

-- A run has one train job; run views join it by run, past the run's analyze jobs.
CREATE UNIQUE INDEX jobs_train_of_run ON jobs (run_id) WHERE kind = 'train';

-- Each run view's best test accuracy: one probe of this instead of reading every epoch's
-- row (a page of 50 runs of 300 epochs: 10 ms to 0.2 ms).
CREATE INDEX metrics_test_accuracy ON metrics (run_id, value)
    WHERE name = 'accuracy' AND split = 'test' AND block = '';

-- An analysis' records by metric name: a run's blocks over training, which its page and
-- figures draw from two names among each analysis' thousands of records (50 analyses of
-- the quick ResNet-20's 2,732 records: 83 ms to 2.7 ms).
CREATE INDEX analysis_records_name ON analysis_records (analysis_id, (record ->> 'name'));

-- Each run view's count of its analyses still to do: the few that are, not all of them.
CREATE INDEX analyses_pending ON analyses (run_id) WHERE status IN ('queued', 'running', 'cancelling');
