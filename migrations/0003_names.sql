-- Runs and experiments are looked up by name too (`GET /v1/runs?name=`, the CLI's run
-- references): their names are what users type.
CREATE INDEX runs_name ON runs (name);
CREATE INDEX experiments_name ON experiments (name);
