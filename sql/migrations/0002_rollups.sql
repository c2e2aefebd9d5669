-- 0002_rollups: meter versions, hourly rollups, the rollup watermark, cancellations.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.
-- The logic over these tables is in sql/functions/ (rollup_run, rollup_verify, cancel_events,
-- usage, upsert_meter, the rollup_lag view).

-- ---------------------------------------------------------------------------------------------
-- Meter versions. A meter's definition (aggregation, unique_property) is a list of versions,
-- each in force from an hour boundary (effective_from) until the next version's. Changing a
-- definition adds a version that starts in the future (meter.upsert_meter checks it): history is
-- never rewritten, and every hour has exactly one definition. Version 1 starts at -infinity.
-- The definition moves here from meter.meters, so that there is one source of truth.
-- ---------------------------------------------------------------------------------------------
create table meter.meter_versions (
    meter_id        bigint not null references meter.meters (id),
    version         integer not null,
    aggregation     text not null,
    unique_property text,
    effective_from  timestamptz not null,
    created_at      timestamptz not null default now(),
    constraint meter_versions_pkey primary key (meter_id, version),
    constraint meter_versions_effective_key unique (meter_id, effective_from),
    constraint meter_versions_version_positive check (version >= 1),
    constraint meter_versions_aggregation check (aggregation in ('count', 'sum', 'max', 'unique_count')),
    constraint meter_versions_unique_property
        check ((aggregation = 'unique_count') = (unique_property is not null)),
    constraint meter_versions_hour_aligned
        check (effective_from = '-infinity'
               or date_trunc('hour', effective_from, 'UTC') = effective_from)
);
comment on table meter.meter_versions is
    'Meter definitions over time: version N is in force from effective_from (a UTC hour) to the next version.';

insert into meter.meter_versions (meter_id, version, aggregation, unique_property, effective_from, created_at)
select id, 1, aggregation, unique_property, '-infinity', created_at from meter.meters;

-- Each version with the end of its validity: the next version's start, or infinity.
create view meter.meter_version_ranges as
select mv.meter_id, mv.version, mv.aggregation, mv.unique_property, mv.effective_from,
       coalesce(lead(mv.effective_from) over (partition by mv.meter_id order by mv.version),
                'infinity') as effective_until
from meter.meter_versions mv;
comment on view meter.meter_version_ranges is
    'Meter versions with their validity [effective_from, effective_until).';

alter table meter.meters drop constraint meters_unique_property;
alter table meter.meters drop constraint meters_aggregation;
alter table meter.meters drop column aggregation;
alter table meter.meters drop column unique_property;

-- ---------------------------------------------------------------------------------------------
-- Commit-order position of every event. A sequence number (id) or a timestamp is not a commit
-- order: a transaction can take id 10, stay open, and commit after id 11 was rolled up. xid is
-- the inserting transaction's id; every transaction with an xid below the current snapshot's
-- xmin has finished, so "all events with xid < xmin" is a set that can no longer grow. The rollup
-- watermark moves over (xid, id) and never past the oldest running transaction.
-- Existing rows (if any) get this migration's xid and are rolled up after it commits.
-- ---------------------------------------------------------------------------------------------
alter table meter.events add column xid xid8 not null default pg_current_xact_id();
comment on column meter.events.xid is
    'Id of the inserting transaction (pg_current_xact_id()); the rollup watermark orders by (xid, id).';

-- The rollup reads events in (xid, id) order from its watermark.
create index events_rollup_position_idx on meter.events (xid, id);
-- Per customer and meter over time: max recomputation after a cancellation, rollup_verify per
-- customer, and (later) invoice lines.
create index events_customer_meter_time_idx on meter.events (customer_id, meter_id, occurred_at);
-- Time ranges across all customers (rollup_verify over an interval): events arrive nearly in
-- occurred_at order, so a BRIN index is tiny and cheap to maintain.
create index events_occurred_at_brin on meter.events using brin (occurred_at);

-- ---------------------------------------------------------------------------------------------
-- Cancellations. One row per cancelled event (the primary key makes cancelling idempotent);
-- the event row itself is never changed, so its key stays taken forever.
-- rolled_up_at is set by the rollup run that subtracted the event, in the same transaction as
-- the subtraction: exactly once, like the watermark for events.
-- ---------------------------------------------------------------------------------------------
create table meter.event_cancellations (
    event_id     bigint primary key,   -- meter.events (id): events are never deleted
    cancelled_at timestamptz not null default now(),
    reason       text,
    rolled_up_at timestamptz,
    constraint event_cancellations_reason_length check (length(reason) <= 1000)
);
create index event_cancellations_pending_idx on meter.event_cancellations (event_id)
    where rolled_up_at is null;
comment on table meter.event_cancellations is
    'Retracted events; rolled_up_at is when the rollup subtracted them (null = not yet).';

-- ---------------------------------------------------------------------------------------------
-- Hourly rollups, per customer, meter and UTC hour. All of count, sum and max are kept whatever
-- the meter's aggregation, so a new meter version never needs a re-aggregation of raw events.
-- A row whose events were all cancelled stays, with zeros (its billed total went to zero).
-- revision counts the changes of the row (the billing sync sends the latest revision).
-- ---------------------------------------------------------------------------------------------
create table meter.rollup_hourly (
    customer_id     bigint not null,
    meter_id        bigint not null,
    hour            timestamptz not null,
    event_count     bigint not null,
    quantity        numeric not null,          -- sum of value
    max_value       numeric,                   -- null when event_count = 0
    revision        bigint not null default 1,
    first_rolled_at timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    constraint rollup_hourly_pkey primary key (customer_id, meter_id, hour),
    constraint rollup_hourly_hour_aligned check (date_trunc('hour', hour, 'UTC') = hour),
    constraint rollup_hourly_non_negative check (event_count >= 0 and quantity >= 0)
);
comment on table meter.rollup_hourly is
    'Per customer, meter and UTC hour: events, sum and max of value, net of cancellations.';

-- What unique_count needs: per hour, each distinct value of the meter's unique_property and the
-- number of (not cancelled) events that carried it. Distinct values over any period are
-- count(distinct value_hash) over its hours where event_count > 0: exact, not a sketch.
-- Keyed by the value's SHA-256, not the value: a property value may be longer than a B-tree key
-- can be (about 2.7 kB), and one such event must not stop every rollup.
create table meter.rollup_hourly_unique (
    customer_id  bigint not null,
    meter_id     bigint not null,
    hour         timestamptz not null,
    value_hash   bytea not null,   -- sha256(convert_to(unique_value, 'UTF8'))
    unique_value text not null,
    event_count  bigint not null,
    constraint rollup_hourly_unique_pkey primary key (customer_id, meter_id, hour, value_hash),
    constraint rollup_hourly_unique_hash_length check (length(value_hash) = 32),
    constraint rollup_hourly_unique_non_negative check (event_count >= 0)
);
comment on table meter.rollup_hourly_unique is
    'Distinct unique_property values per customer, meter and hour, with their event counts.';

-- ---------------------------------------------------------------------------------------------
-- The rollup watermark: one row. Every event with (xid, id) < (position_xid, position_id) has
-- been folded into meter.rollup_hourly, and no other. Only meter.rollup_run() moves it, in the
-- transaction that folds the events. The last_* columns describe the latest run, for operators.
-- ---------------------------------------------------------------------------------------------
create table meter.rollup_watermark (
    name                   text primary key default 'events',
    position_xid           xid8 not null default '0',
    position_id            bigint not null default 0,
    updated_at             timestamptz not null default now(),
    runs_total             bigint not null default 0,
    events_total           bigint not null default 0,
    cancellations_total    bigint not null default 0,
    last_run_at            timestamptz,
    last_run_events        bigint,
    last_run_cancellations bigint,
    last_run_hours         bigint,
    last_run_ms            numeric,
    constraint rollup_watermark_single_row check (name = 'events')
);
insert into meter.rollup_watermark (name) values ('events');
comment on table meter.rollup_watermark is
    'Events with (xid, id) below (position_xid, position_id) are folded into the rollups; only rollup_run moves it.';

-- What meter.rollup_run() returns.
create type meter.rollup_result as (
    ran                   boolean,  -- false: another run held the lock; nothing was done
    events_folded         bigint,   -- events added to the rollups by this run
    cancellations_folded  bigint,   -- cancellations subtracted by this run
    hours_touched         bigint,   -- distinct (customer, meter, hour) rows changed
    position_xid          xid8,     -- the watermark after the run
    position_id           bigint,
    horizon_xid           xid8,     -- xmin of the run's snapshot: events at or past it must wait
    more_pending          boolean,  -- true when max_events stopped the run early
    duration_ms           numeric
);

-- What meter.cancel_events() returns for each element, by position.
create type meter.cancel_verdict as (
    ord      integer,  -- 0-based position in the request
    status   text,     -- cancelled | already_cancelled | rejected
    event_id bigint,
    code     text,     -- stable error code when rejected
    field    text,
    reason   text
);

-- ---------------------------------------------------------------------------------------------
-- Privileges. The ingest role cancels events and reads usage through functions (SECURITY
-- DEFINER); analysts read rollups, versions and cancellations.
-- ---------------------------------------------------------------------------------------------
grant select on meter.meter_versions, meter.meter_version_ranges, meter.rollup_hourly, meter.rollup_hourly_unique,
    meter.rollup_watermark, meter.event_cancellations to meter_analyst;

-- meter.upsert_meter gains an effective_from parameter (sql/functions/upsert_meter.sql); the old
-- five-argument signature would otherwise stay behind as a second overload.
drop function if exists meter.upsert_meter(text, text, text, text, text);
