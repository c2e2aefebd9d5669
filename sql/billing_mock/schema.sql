-- The mock billing engine's own state (meterctl billing-mock). The product never reads this
-- schema: it talks to the engine over HTTP only, as it would to Stripe. Applied (idempotently)
-- by the mock at every start, then the functions of sql/billing_mock/functions/ in name order
-- (one function per file, named after it, search_path pinned, like sql/functions/).
create schema if not exists billing_mock;

-- Every API object (customer, product, price, subscription, subscription_item, invoice,
-- test_helpers.test_clock, webhook_endpoint, event) as the JSON document the API returns.
create table if not exists billing_mock.objects (
    id          text primary key,
    object      text not null,
    data        jsonb not null,
    created_at  timestamptz not null default now()
);
create index if not exists objects_by_type on billing_mock.objects (object, created_at);
create index if not exists objects_subscription_customer on billing_mock.objects ((data ->> 'customer'))
    where object in ('subscription', 'invoice');
create index if not exists objects_item_subscription on billing_mock.objects ((data ->> 'subscription'))
    where object = 'subscription_item';

-- Usage records: one quantity per (subscription item, timestamp). action=set replaces it,
-- action=increment adds to it (Stripe's legacy usage-record semantics).
create table if not exists billing_mock.usage_records (
    subscription_item  text not null,
    ts                 bigint not null,
    quantity           numeric not null,
    id                 text not null unique,
    updated_at         timestamptz not null default now(),
    writes             integer not null default 1,
    primary key (subscription_item, ts)
);

-- Idempotency keys, kept 24 hours: (api key, key) -> the request's fingerprint and the saved
-- response. Written in the transaction that applies the request, so applying and remembering
-- are one commit: a retry either replays the saved response or finds nothing was applied.
create table if not exists billing_mock.idempotency (
    api_key      text not null,
    key          text not null,
    fingerprint  text not null,
    status       integer not null,
    body         text not null,
    created_at   timestamptz not null default now(),
    primary key (api_key, key)
);

-- Webhook deliveries: one row per (event, endpoint); retried with exponential backoff until 2xx.
create table if not exists billing_mock.deliveries (
    id               bigint generated always as identity primary key,
    event_id         text not null,
    endpoint_id      text not null,
    attempts         integer not null default 0,
    next_attempt_at  timestamptz not null default now(),
    delivered_at     timestamptz,
    last_status      integer,
    last_error       text,
    unique (event_id, endpoint_id)
);
create index if not exists deliveries_due on billing_mock.deliveries (next_attempt_at) where delivered_at is null;

-- Every usage write applied, in order (for tests and audits: a key applied twice would show here).
create table if not exists billing_mock.usage_record_log (
    id                 bigint generated always as identity primary key,
    subscription_item  text not null,
    ts                 bigint not null,
    quantity           numeric not null,
    action             text not null,
    idempotency_key    text,
    applied_at         timestamptz not null default now()
);
create index if not exists usage_record_log_item on billing_mock.usage_record_log (subscription_item, ts);

-- Billing Meters (Stripe's usage-based billing since API 2025-03-31.basil): meters are objects
-- ('billing.meter'); meter events are rows here, one per accepted event, in order of receipt
-- (seq). identifier is unique for ever (Stripe: for at least 24 hours). A cancelled event
-- (meter_event_adjustments, type=cancel) keeps its row with cancelled_at set.
create table if not exists billing_mock.meter_events (
    seq           bigint generated always as identity primary key,
    identifier    text not null unique,
    meter_id      text not null,
    event_name    text not null,
    customer      text not null,
    value         numeric not null,
    ts            bigint not null,
    received_at   bigint not null,
    cancelled_at  bigint,
    payload       jsonb not null,
    via           text not null default 'v1'
);
create index if not exists meter_events_by_customer on billing_mock.meter_events (meter_id, customer, ts);

-- v2 meter event sessions: a token for POST /v2/billing/meter_event_stream, valid 15 minutes
-- (real time, like Stripe's; test clocks do not move it).
create table if not exists billing_mock.meter_event_sessions (
    token       text primary key,
    id          text not null unique,
    api_key     text not null,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null
);

-- Meter events the engine refused after accepting them (the v2 stream validates asynchronously):
-- reported by a v1.billing.meter.error_report_triggered (or .no_meter_found) event.
create table if not exists billing_mock.meter_event_errors (
    id          bigint generated always as identity primary key,
    meter_id    text,
    event_name  text,
    identifier  text,
    code        text not null,
    message     text not null,
    report_id   text,
    created_at  timestamptz not null default now()
);
