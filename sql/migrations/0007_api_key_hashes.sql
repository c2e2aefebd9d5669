-- 0007_api_key_hashes: the service sends the SHA-256 of a bearer token, never the token (issue 13:
-- with log_min_duration_statement set, Postgres logged a slow ingest's parameters, the whole token
-- among them). The functions that took a token now take its hash (bytea); the old signatures go.
-- The new ones are created by the same `meterctl migrate` from sql/functions/, with their grants.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

drop function if exists meter.api_key_authenticate(text);
drop function if exists meter.api_key_create(text, text);
drop function if exists meter.event_ingest(jsonb, interval, interval, text);
drop function if exists meter.event_cancel(jsonb, text);
