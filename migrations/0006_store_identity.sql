-- One random id per database, written once: what the API stamps on the files it leaves in
-- the checkpoint store before their row exists (upload placement markers), so that an API
-- pointed at another database never takes them for its own leftovers.
CREATE TABLE store_identity (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    id uuid NOT NULL DEFAULT gen_random_uuid()
);
INSERT INTO store_identity DEFAULT VALUES;
