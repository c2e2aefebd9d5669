-- 0017_outgoing_webhooks: meter tells operators what happened (issue 16): endpoints they register
-- for event types, and a transactional outbox of messages delivered to them, signed per the
-- Standard Webhooks specification by the service (MeterCore WebhookDelivery).
--
--   webhook_endpoints    url, the event types it takes, its signing secret (whsec_ + base64 of
--                        24-64 random bytes; the previous one kept during a rotation), enabled
--   webhook_messages     one per occurrence, id msg_<32 hex> derived from the occurrence's key,
--                        so an occurrence emitted twice (a retried transaction, a second close)
--                        is one message: the receiver's dedup key (webhook-id)
--   webhook_deliveries   (message, endpoint): pending -> in_flight -> delivered, or back to pending
--                        with backoff and jitter, or dead after the give-up time; re-driven by
--                        meter.webhook_redrive (`meterctl webhooks redrive`)
--
-- Messages are written in the transaction of what they report (meter._webhook_emit), so a message
-- exists exactly when its occurrence committed. Delivery is at least once.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

create table meter.webhook_endpoints (
    id               bigint generated always as identity primary key,
    url              text not null,
    event_types      text[] not null,
    secret           text not null,
    previous_secret  text,
    enabled          boolean not null default true,
    created_at       timestamptz not null default pg_catalog.now(),
    rotated_at       timestamptz,
    disabled_at      timestamptz,
    constraint webhook_endpoints_url check (url ~ '^https?://[^[:space:]]+$' and pg_catalog.length(url) <= 2048),
    constraint webhook_endpoints_types check (pg_catalog.cardinality(event_types) > 0 and event_types <@ array[
        'alert.triggered', 'invoice.closed', 'usage.late_after_close', 'sync.dead_letter', 'limit.reached']),
    constraint webhook_endpoints_secret check (secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'
                                               and (previous_secret is null or previous_secret ~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$'))
);
comment on table meter.webhook_endpoints is
    'Outgoing webhook endpoints: URL, event types, Standard Webhooks signing secret (and the previous one during a rotation).';

create table meter.webhook_messages (
    id          text primary key,
    type        text not null,
    payload     jsonb not null,
    created_at  timestamptz not null default pg_catalog.now(),
    constraint webhook_messages_id check (id ~ '^msg_[0-9a-f]{32}$')
);
comment on table meter.webhook_messages is
    'Outgoing webhook messages, one per occurrence (id derived from its key: the receiver''s dedup key).';

create table meter.webhook_deliveries (
    message_id       text not null references meter.webhook_messages (id),
    endpoint_id      bigint not null references meter.webhook_endpoints (id),
    state            text not null default 'pending',
    attempts         integer not null default 0,
    next_attempt_at  timestamptz not null default pg_catalog.now(),
    claim_token      bigint,
    claimed_at       timestamptz,
    last_status      integer,
    last_error       text,
    delivered_at     timestamptz,
    created_at       timestamptz not null default pg_catalog.now(),
    constraint webhook_deliveries_pkey primary key (message_id, endpoint_id),
    constraint webhook_deliveries_state check (state in ('pending', 'in_flight', 'delivered', 'dead')),
    constraint webhook_deliveries_claim check ((state = 'in_flight') = (claim_token is not null))
);
comment on table meter.webhook_deliveries is
    'One delivery per (message, endpoint): pending, in flight, delivered or dead (re-driven by command).';
create index webhook_deliveries_due on meter.webhook_deliveries (next_attempt_at) where state = 'pending';
create index webhook_deliveries_in_flight on meter.webhook_deliveries (claimed_at) where state = 'in_flight';

create sequence meter.webhook_claim_token;

grant select (id, url, event_types, enabled, created_at, rotated_at, disabled_at) on meter.webhook_endpoints to meter_analyst;
grant select on meter.webhook_messages, meter.webhook_deliveries to meter_analyst;
