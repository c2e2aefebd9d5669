-- 0003_billing_sync: the outbox from hourly rollups to the billing engine, the links between our
-- customers/meters and the engine's objects, webhooks received, and the invoices they carry.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.
-- The logic over these tables is in sql/functions/ (sync_claim, sync_succeeded, sync_failed,
-- sync_retry, billing_link_record, billing_unlinked, webhook_receive, webhook_process, and the
-- views sync_status and sync_backlog). meter.rollup_run() writes the outbox.

-- ---------------------------------------------------------------------------------------------
-- What each meter is billed with: the engine's price (created by `meterctl billing price`).
-- A meter without a row here is not billed: its hours wait in the outbox as "unpriced".
-- ---------------------------------------------------------------------------------------------
create table meter.billing_prices (
    meter_id    bigint primary key references meter.meters (id),
    price_id    text not null,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint billing_prices_price_id check (price_id ~ '^[A-Za-z0-9_]{1,255}$')
);
comment on table meter.billing_prices is
    'The billing engine price each meter is billed with; meters without one are not synced.';

-- One billing customer and one subscription per customer of ours; one subscription item per
-- (customer, meter). Provisioned through the engine's API with idempotency keys, then recorded.
create table meter.billing_customers (
    customer_id          bigint primary key references meter.customers (id),
    billing_customer_id  text not null unique,
    subscription_id      text unique,
    created_at           timestamptz not null default now()
);
comment on table meter.billing_customers is
    'Our customer -> the billing engine''s customer (cus_...) and subscription (sub_...).';

create table meter.billing_links (
    customer_id           bigint not null references meter.customers (id),
    meter_id              bigint not null references meter.meters (id),
    subscription_item_id  text not null unique,
    price_id              text not null,
    linked_at             timestamptz not null default now(),
    constraint billing_links_pkey primary key (customer_id, meter_id)
);
comment on table meter.billing_links is
    '(customer, meter) -> the subscription item (si_...) its hourly usage is reported to.';

-- ---------------------------------------------------------------------------------------------
-- The outbox: one row per (customer, meter, hour) of a billed meter that has ever had a rollup. rollup_run() sets
-- `revision` to the hour's rollup revision in the transaction that changed the hour, so "this
-- hour must be synced, at this version" is committed atomically with the change itself.
--
-- States: pending (revision > synced_revision, waiting for next_attempt_at), in_flight (claimed
-- by a worker until claimed_at + lease), synced (synced_revision = revision), dead (attempts
-- exhausted; meter.sync_retry() re-drives), closed (the engine refused the hour because its
-- billing period is already invoiced there, and our own close of that period exists: the change is
-- carried by an adjustment line of our next invoice, see meter.close_period). An hour is sent with
-- its absolute total under action=set, so sending a revision is idempotent and a newer revision supersedes an older one.
--
-- sending_revision/sending_quantity/sending_key hold a send whose outcome is unknown (timeout,
-- reset, 5xx, 409): until a definitive answer arrives, every retry repeats exactly that request
-- (same key, same parameters), so the engine either replays it or applies it once; only then is
-- a newer revision sent. This is what keeps an older total from ever landing after a newer one.
-- ---------------------------------------------------------------------------------------------
-- (No foreign key to rollup_hourly: rollup_run writes both in one statement, and rollup rows are
-- never deleted; the check would cost a lookup per changed hour on the rollup's hot path.)
create table meter.sync_outbox (
    customer_id       bigint not null,
    meter_id          bigint not null,
    hour              timestamptz not null,
    revision          bigint not null,
    synced_revision   bigint not null default 0,
    state             text not null default 'pending',
    attempts          integer not null default 0,
    next_attempt_at   timestamptz not null default now(),
    claim_token       bigint,
    claimed_by        text,
    claimed_at        timestamptz,
    sending_revision  bigint,
    sending_quantity  numeric,
    sending_key       text,
    synced_quantity   numeric,
    synced_at         timestamptz,
    unsynced_since    timestamptz default now(),
    last_error        text,
    last_attempt_at   timestamptz,
    created_at        timestamptz not null default now(),
    constraint sync_outbox_pkey primary key (customer_id, meter_id, hour),
    constraint sync_outbox_state check (state in ('pending', 'in_flight', 'synced', 'dead', 'closed')),
    constraint sync_outbox_revisions check (synced_revision <= revision),
    constraint sync_outbox_claim check ((state = 'in_flight') = (claim_token is not null)),
    constraint sync_outbox_sending check ((sending_revision is null) = (sending_key is null)
                                          and (sending_revision is null) = (sending_quantity is null))
);
comment on table meter.sync_outbox is
    'Transactional outbox: hours whose rollup revision is not yet reported to the billing engine.';

-- Due work, in-flight leases and dead letters are each a small subset: partial indexes.
create index sync_outbox_due on meter.sync_outbox (next_attempt_at) where state = 'pending';
create index sync_outbox_in_flight on meter.sync_outbox (claimed_at) where state = 'in_flight';
create index sync_outbox_dead on meter.sync_outbox (customer_id, meter_id) where state = 'dead';
create index sync_outbox_unsynced on meter.sync_outbox (unsynced_since) where unsynced_since is not null;

create sequence meter.sync_claim_token;
comment on sequence meter.sync_claim_token is 'Claim tokens: a worker''s report counts only for its own claim.';

-- Only billed meters' hours enter the outbox (rollup_run checks meter.billing_prices); pricing a
-- meter (meter.billing_price_set) enqueues the hours it already has.

-- ---------------------------------------------------------------------------------------------
-- Webhooks in. Secrets: several may be active at once (rotation: add the new one, switch the
-- engine's endpoint, retire the old one). Events are stored once by id, processed later.
-- ---------------------------------------------------------------------------------------------
create table meter.webhook_secrets (
    id          bigint generated always as identity primary key,
    secret      text not null unique,
    active      boolean not null default true,
    created_at  timestamptz not null default now(),
    retired_at  timestamptz,
    constraint webhook_secrets_format check (secret ~ '^whsec_[A-Za-z0-9_]{8,}$')
);
comment on table meter.webhook_secrets is
    'Signing secrets accepted on POST /webhooks/billing (several active during a rotation).';

create table meter.webhook_events (
    event_id      text primary key,
    type          text not null,
    created       timestamptz not null,
    payload       jsonb not null,
    received_at   timestamptz not null default now(),
    processed_at  timestamptz,
    outcome       text,
    constraint webhook_events_id check (event_id ~ '^evt_[A-Za-z0-9_]{1,250}$')
);
comment on table meter.webhook_events is
    'Billing webhooks received, once each by event id (duplicates are acknowledged and dropped).';
create index webhook_events_unprocessed on meter.webhook_events (received_at) where processed_at is null;

-- Invoices as the engine reports them. Status only moves forward (draft < open < paid/void/
-- uncollectible): a paid arriving before its finalized leaves the invoice paid.
create table meter.billing_invoices (
    invoice_id           text primary key,
    billing_customer_id  text not null,
    customer_id          bigint references meter.customers (id),
    subscription_id      text,
    status               text not null,
    status_rank          smallint not null,
    currency             text not null,
    period_start         timestamptz not null,
    period_end           timestamptz not null,
    subtotal             bigint not null,
    total                bigint not null,
    amount_due           bigint not null,
    amount_paid          bigint not null,
    created              timestamptz not null,
    finalized_at         timestamptz,
    paid_at              timestamptz,
    last_event_id        text not null,
    updated_at           timestamptz not null default now(),
    constraint billing_invoices_status check (status in ('draft', 'open', 'paid', 'void', 'uncollectible'))
);
comment on table meter.billing_invoices is
    'Invoices from the billing engine (amounts in integer minor units of currency).';
comment on column meter.billing_invoices.status_rank is 'draft 1, open 2, paid/void/uncollectible 3: never lowered.';
create index billing_invoices_customer on meter.billing_invoices (customer_id, period_start);

create table meter.billing_invoice_lines (
    invoice_id            text not null references meter.billing_invoices (invoice_id),
    line_id               text not null,
    subscription_item_id  text,
    price_id              text,
    customer_id           bigint,
    meter_id              bigint,
    quantity              numeric not null,
    amount                bigint not null,
    currency              text not null,
    period_start          timestamptz not null,
    period_end            timestamptz not null,
    description           text,
    constraint billing_invoice_lines_pkey primary key (invoice_id, line_id)
);
comment on table meter.billing_invoice_lines is
    'Invoice lines, mapped back to our (customer, meter) through meter.billing_links.';

grant select on meter.billing_prices, meter.billing_customers, meter.billing_links, meter.sync_outbox,
                meter.webhook_events, meter.billing_invoices, meter.billing_invoice_lines
    to meter_analyst;
