-- 0001_init: the foundation of meter's one schema.
--
-- Forward-only. `meterctl migrate` runs this file once, inside its own transaction, holding the
-- migration advisory lock, and records its SHA-256 in meter.schema_migrations. Never edit it
-- after it has been applied anywhere: add 0002_... instead.
--
-- Tables here; logic (functions, views) lives one per file in sql/functions/, re-applied on
-- every deploy with CREATE OR REPLACE.

-- ---------------------------------------------------------------------------------------------
-- Roles for least privilege. Roles are cluster-wide, so create them only when missing.
--   meter_ingest  : may authenticate an API key and call meter.ingest_events(); nothing else.
--   meter_analyst : read-only on the reporting views.
-- Both are NOLOGIN group roles: grant them to the login roles your deployment uses.
-- ---------------------------------------------------------------------------------------------
do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'meter_ingest') then
        create role meter_ingest nologin;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'meter_analyst') then
        create role meter_analyst nologin;
    end if;
end
$$;

revoke all on schema meter from public;
grant usage on schema meter to meter_ingest, meter_analyst;
grant select on meter.schema_migrations to meter_ingest, meter_analyst;

-- ---------------------------------------------------------------------------------------------
-- Customers: who is billed. Events name a customer by external_id (the operator's own id).
-- ---------------------------------------------------------------------------------------------
create table meter.customers (
    id               bigint generated always as identity primary key,
    external_id      text not null,
    name             text,
    billing_timezone text not null default 'UTC',
    created_at       timestamptz not null default now(),
    constraint customers_external_id_key unique (external_id),
    constraint customers_external_id_length check (length(external_id) between 1 and 255)
);
comment on table meter.customers is
    'Billed customers; events reference them by external_id (the SaaS operator''s own id).';

-- ---------------------------------------------------------------------------------------------
-- Meters: what is measured. Events name a meter by code (the event type).
-- aggregation: count (events), sum (of value), max (of value), unique_count (distinct values of
-- properties->>unique_property within the billing period).
-- ---------------------------------------------------------------------------------------------
create table meter.meters (
    id              bigint generated always as identity primary key,
    code            text not null,
    name            text,
    aggregation     text not null default 'count',
    unique_property text,
    unit            text,
    created_at      timestamptz not null default now(),
    constraint meters_code_key unique (code),
    constraint meters_code_format check (code ~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$'),
    constraint meters_aggregation check (aggregation in ('count', 'sum', 'max', 'unique_count')),
    constraint meters_unique_property check ((aggregation = 'unique_count') = (unique_property is not null))
);
comment on table meter.meters is
    'Billable metrics; events reference them by code (the event type).';

-- ---------------------------------------------------------------------------------------------
-- API keys: bearer tokens for the ingest API. Only the SHA-256 of a token is stored; the token
-- itself is shown once, by `meterctl keys create`. prefix (first 12 chars) identifies a key in
-- listings and logs without revealing it.
-- ---------------------------------------------------------------------------------------------
create table meter.api_keys (
    id         bigint generated always as identity primary key,
    name       text not null,
    prefix     text not null,
    key_hash   bytea not null,
    created_at timestamptz not null default now(),
    revoked_at timestamptz,
    constraint api_keys_key_hash_key unique (key_hash),
    constraint api_keys_hash_length check (length(key_hash) = 32)
);
comment on table meter.api_keys is 'Ingest API keys, stored as SHA-256 hashes; revoked_at set = refused.';

-- ---------------------------------------------------------------------------------------------
-- Events: the raw, immutable usage record. Idempotency is this table's UNIQUE constraint on
-- (customer_id, idempotency_key): permanent, no TTL, no cache in front. A retry with the same
-- key can never insert a second row, whatever the timing.
-- occurred_at is the client's event time (UTC, microseconds); received_at the server's commit-
-- transaction time. value is exact numeric as sent (at most 26 integer and 12 fractional digits).
-- ---------------------------------------------------------------------------------------------
create table meter.events (
    id              bigint generated always as identity primary key,
    customer_id     bigint not null,   -- meter.customers (id); see the note on foreign keys below
    meter_id        bigint not null,   -- meter.meters (id)
    idempotency_key text not null,
    occurred_at     timestamptz not null,
    received_at     timestamptz not null default now(),
    value           numeric not null default 1,
    properties      jsonb not null default '{}',
    constraint events_customer_key unique (customer_id, idempotency_key),
    constraint events_key_length check (length(idempotency_key) between 1 and 255),
    constraint events_value_range check (value >= 0 and value < 1e26 and scale(value) <= 12),
    constraint events_properties_object check (jsonb_typeof(properties) = 'object')
);
comment on table meter.events is
    'Raw usage events. UNIQUE (customer_id, idempotency_key) is the idempotency guarantee.';

-- No FOREIGN KEY constraints on meter.events, on purpose. A foreign-key check takes a FOR KEY
-- SHARE lock on the parent row for every inserted event; every event of a meter locks the same
-- meter row, so concurrent ingest turns those locks into MultiXacts (measured: -16 % single-event
-- ingest throughput). Integrity holds without them: ids are only written by
-- meter.ingest_events(), which resolves them by lookup in the same statement, and customers and
-- meters can never be deleted (trigger meter._refuse_delete, sql/functions/_refuse_delete.sql).
-- Tests/sql/catalog.test.sql checks that no event points at a missing customer or meter.

-- ---------------------------------------------------------------------------------------------
-- Redeliveries: every delivery of a key that already existed, kept for audit and for the
-- reconciliation's "duplicates rejected" column. A duplicate (same content) is harmless; a
-- conflict (same key, different content) is kept with what was offered so it can be traced.
-- ---------------------------------------------------------------------------------------------
create table meter.event_redeliveries (
    id              bigint generated always as identity primary key,
    event_id        bigint not null,   -- meter.events (id): events are never deleted
    verdict         text not null,
    received_at     timestamptz not null default now(),
    offered         jsonb,
    constraint event_redeliveries_verdict check (verdict in ('duplicate', 'conflict'))
);
create index event_redeliveries_event_id_idx on meter.event_redeliveries (event_id);
comment on table meter.event_redeliveries is
    'Deliveries of an already-stored idempotency key: duplicate (same content) or conflict (different).';

-- The verdict row meter.ingest_events() returns for each event of a request, by position.
create type meter.ingest_verdict as (
    ord      integer,  -- 0-based position of the event in the request
    status   text,     -- accepted | duplicate | conflict | rejected
    event_id bigint,   -- the stored event (new for accepted, original otherwise); null if rejected
    code     text,     -- stable error code when not accepted/duplicate
    field    text,     -- offending field, when one is to blame
    reason   text      -- human-readable explanation
);
