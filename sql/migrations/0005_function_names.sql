-- 0005_function_names: functions named noun first (issue 17), like the rest of sql/functions:
--   authenticate_api_key → api_key_authenticate    ingest_events   → event_ingest
--   create_api_key       → api_key_create          cancel_events   → event_cancel
--   revoke_api_key       → api_key_revoke          close_period    → period_close
--   upsert_customer      → customer_upsert         upsert_meter    → meter_upsert
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.
-- This migration only drops the old names; `meterctl migrate` creates the new ones from
-- sql/functions/ right after it, in its own transaction, with their grants. A service binary older
-- than this migration calls the old names: upgrade the binary with the schema (docs/runbook.md,
-- "Upgrading"). The tables, types and views keep their names.

-- On a fresh database there is nothing to drop: no NOTICE for each name.
set local client_min_messages = warning;

drop function if exists meter.authenticate_api_key;
drop function if exists meter.create_api_key;
drop function if exists meter.revoke_api_key;
drop function if exists meter.ingest_events;
drop function if exists meter.cancel_events;
drop function if exists meter.close_period;
drop function if exists meter.upsert_customer;
drop function if exists meter.upsert_meter;
