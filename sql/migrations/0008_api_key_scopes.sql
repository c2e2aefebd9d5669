-- 0008_api_key_scopes: an API key may do only what it is for (issue 13: any key could ingest for,
-- read the usage of, and cancel the events of any customer, so a leaked backend key could zero
-- out any bill). Scopes: ingest (POST /v1/events), cancel (POST /v1/events/cancel), read
-- (GET /v1/usage); and optionally a list of customers. Existing keys keep working: every scope,
-- every customer.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

alter table meter.api_keys
    add column scopes text[] not null default array['ingest', 'cancel', 'read'],
    add column customer_ids bigint[],
    add constraint api_keys_scopes check (
        pg_catalog.cardinality(scopes) > 0 and scopes <@ array['ingest', 'cancel', 'read']);
comment on column meter.api_keys.scopes is
    'What the key may do: ingest (POST /v1/events), cancel (POST /v1/events/cancel), read (GET /v1/usage).';
comment on column meter.api_keys.customer_ids is
    'The customers (meter.customers.id) the key may act for; NULL = every customer.';

-- api_key_create gains scopes and customers (sql/functions/api_key_create.sql).
drop function if exists meter.api_key_create(text, text, bytea);
