-- Where a running analysis is ({"split", "pass", "batch", "batches"}), as its analyzer last
-- reported; NULL before the first report and once the analysis ended or was claimed again.
ALTER TABLE analyses ADD COLUMN progress jsonb;
