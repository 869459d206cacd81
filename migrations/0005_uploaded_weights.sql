-- Runs made of weights trained elsewhere (POST /v1/runs/import): the uploaded file as the
-- API stored it (domain::service::UploadedWeights). Their train job imports the weights
-- rather than training.
ALTER TABLE runs ADD COLUMN weights jsonb;
