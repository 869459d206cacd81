-- How long each pass of an analysis took ([{"metrics": [...], "seconds": s}, ...]); NULL for
-- analyses stored before passes were timed.
ALTER TABLE analyses ADD COLUMN passes jsonb;
