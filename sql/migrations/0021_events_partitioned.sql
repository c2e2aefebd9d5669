-- 0021_events_partitioned: issue 20. meter.events becomes a table partitioned by UTC month of
-- occurred_at, and the idempotency guarantee moves to a key table of its own (docs/scaling.md §2,
-- option 2; docs/decisions.md 121).
--
-- Why a key table. PostgreSQL accepts a unique constraint on a partitioned table only when it
-- contains the partition key, so UNIQUE (customer_id, idempotency_key) cannot stay on the events.
-- meter.event_keys keeps it, unpartitioned and permanent: every verdict stays as it was
-- (`duplicate` for a retry months or years later, `conflict` for a reused key, a racing twin waits
-- for the winner's commit on the key's index entry), and a cancellation finds its event there.
-- The events lose their unique index on the key (the key table's replaces it) and their
-- primary key becomes (id, occurred_at), so each month's partition is self-contained and can be
-- exported, detached and dropped (meterctl events archive).
--
-- The conversion, in this migration's one transaction:
--   1. the existing table steps aside under another name (its indexes renamed with it);
--   2. the partitioned table is created with the same columns, checks and (non-unique) indexes,
--      ids drawn from meter.event_ids (continuing the old identity, so ids keep increasing);
--   3. one partition per UTC month from the oldest event's month (or 35 days ago) to three months
--      ahead; meter.events_partitions_ensure (sql/functions) keeps creating them afterwards;
--   4. every event is copied with all its columns, id and xid included, so the rollup watermark
--      (xid, id), cancellations and redeliveries (which point at ids) mean what they meant;
--   5. every key goes into meter.event_keys with its event's id and occurred_at;
--   6. the old table is dropped, after the three views and the function built on it (dropped by
--      name; re-created by the migrator's re-application of sql/functions and sql/views, which
--      follows every migration in the same run; anything else depending on the table fails the
--      migration instead of being dropped silently).
-- Its duration is dominated by writing every event once more (plan it like a restore:
-- docs/runbook.md, "Upgrading to partitioned events"). The lock it holds blocks ingest throughout.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

-- 1. The old table steps aside.
alter table meter.events rename to events_unpartitioned;
alter index meter.events_pkey rename to events_unpartitioned_pkey;
alter index meter.events_customer_key rename to events_unpartitioned_customer_key;
alter index meter.events_rollup_position_idx rename to events_unpartitioned_rollup_position_idx;
alter index meter.events_customer_meter_time_idx rename to events_unpartitioned_customer_meter_time_idx;
alter index meter.events_occurred_at_brin rename to events_unpartitioned_occurred_at_brin;

-- 2. Ids continue where the identity column stopped.
create sequence meter.event_ids as bigint;
select pg_catalog.setval('meter.event_ids',
                         greatest(coalesce(pg_catalog.pg_sequence_last_value(
                                               pg_catalog.pg_get_serial_sequence('meter.events_unpartitioned', 'id')), 0),
                                  coalesce((select pg_catalog.max(id) from meter.events_unpartitioned), 0)) + 1,
                         false);
comment on sequence meter.event_ids is
    'Event ids: drawn by meter.event_ingest_arrays when it claims a key in meter.event_keys, then stored in meter.events.';

create table meter.events (
    id              bigint not null default pg_catalog.nextval('meter.event_ids'),
    customer_id     bigint not null,   -- meter.customers (id); no foreign keys (0001_init.sql)
    meter_id        bigint not null,   -- meter.meters (id)
    idempotency_key text not null,     -- unique per customer through meter.event_keys
    occurred_at     timestamptz not null,
    received_at     timestamptz not null default pg_catalog.now(),
    value           numeric not null default 1,
    properties      jsonb not null default '{}',
    xid             xid8 not null default pg_catalog.pg_current_xact_id(),
    constraint events_pkey primary key (id, occurred_at),
    constraint events_key_length check (pg_catalog.length(idempotency_key) between 1 and 255),
    constraint events_value_range check (value >= 0 and value < 1e26 and pg_catalog.scale(value) <= 12),
    constraint events_properties_object check (pg_catalog.jsonb_typeof(properties) = 'object')
) partition by range (occurred_at);
alter sequence meter.event_ids owned by meter.events.id;

comment on table meter.events is
    'Raw usage events, one partition per UTC month of occurred_at (meter.events_partitions_ensure). Idempotency: meter.event_keys.';
comment on column meter.events.xid is
    'Id of the inserting transaction (pg_current_xact_id()); the rollup watermark orders by (xid, id).';

-- The same indexes as before but the key's (each partition gets its own).
create index events_rollup_position_idx on meter.events (xid, id);
create index events_customer_meter_time_idx on meter.events (customer_id, meter_id, occurred_at);
create index events_occurred_at_brin on meter.events using brin (occurred_at);

-- ---------------------------------------------------------------------------------------------
-- The idempotency keys: one row per event ever stored, kept when its month is archived.
-- ---------------------------------------------------------------------------------------------
create table meter.event_keys (
    customer_id     bigint not null,
    idempotency_key text not null,
    event_id        bigint not null,       -- meter.events (id)
    occurred_at     timestamptz not null,  -- the event's, so that it is found in one partition
    -- Set when the event's month is archived: SHA-256 of the event's content as
    -- meter._event_digest computes it, so that a retry still gets duplicate or conflict.
    archived_digest bytea,
    constraint event_keys_pkey primary key (customer_id, idempotency_key)
);
comment on table meter.event_keys is
    'Idempotency: PRIMARY KEY (customer_id, idempotency_key) is the guarantee, for every event ever stored (archived months included).';
comment on column meter.event_keys.archived_digest is
    'Set by archiving: SHA-256 of the event''s content (meter._event_digest), judged instead of the archived row.';

-- ---------------------------------------------------------------------------------------------
-- Archived months: meterctl events archive records each (file, SHA-256, rows) before it detaches
-- and drops the partition; meter.events_partitions_ensure never re-creates an archived month.
-- ---------------------------------------------------------------------------------------------
create table meter.event_archives (
    period_start  timestamptz primary key,  -- the UTC month, its first instant
    period_end    timestamptz not null,
    events        bigint not null,
    file          text not null,
    sha256        text not null,
    hashes_checked integer not null,        -- invoice-line events hashes recomputed from the file
    outbox_rows   bigint not null default 0, -- the month's billing outbox rows removed with it
    archived_at   timestamptz not null default pg_catalog.now(),
    constraint event_archives_month check (period_end = period_start + interval '1 month'),
    constraint event_archives_sha256 check (sha256 ~ '^[0-9a-f]{64}$')
);
comment on table meter.event_archives is
    'UTC months of events exported (file, SHA-256), verified against invoice-line hashes, then dropped.';
grant select on meter.event_archives to meter_analyst;

-- ---------------------------------------------------------------------------------------------
-- Sign-offs: who signed a period's reconciliation, when, and which report (meterctl signoff). A
-- month's events are archived only once every period they were billed in is signed off.
-- ---------------------------------------------------------------------------------------------
create table meter.period_signoffs (
    id             bigint generated always as identity primary key,
    period         text not null,
    signed_by      text not null,
    signed_at      timestamptz not null default pg_catalog.now(),
    note           text,
    report_sha256  text,        -- SHA-256 of the signed report file, when one was named
    invoices       integer not null,  -- the period's invoices at signing
    total_minor    numeric not null,  -- Σ of their totals (minor units, all currencies)
    constraint period_signoffs_period check (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    constraint period_signoffs_signed_by check (pg_catalog.length(signed_by) between 1 and 200),
    constraint period_signoffs_report_sha256 check (report_sha256 ~ '^[0-9a-f]{64}$')
);
create index period_signoffs_period_idx on meter.period_signoffs (period);
comment on table meter.period_signoffs is
    'Reconciliation sign-offs per period (meterctl signoff); archiving a month of events requires them.';
grant select on meter.period_signoffs to meter_analyst;

-- 3. The partitions: from the oldest event's month (or 35 days back) to three months ahead.
do $$
declare
    v_month timestamptz;
    v_last  timestamptz;
begin
    set local timezone = 'UTC';
    v_month := pg_catalog.date_trunc('month',
                   least(coalesce((select pg_catalog.min(occurred_at) from meter.events_unpartitioned), 'infinity'),
                         pg_catalog.now() - interval '35 days'));
    v_last := pg_catalog.date_trunc('month', pg_catalog.now() + interval '3 months');
    while v_month <= v_last loop
        execute pg_catalog.format(
            'create table meter.%I partition of meter.events for values from (%L) to (%L)',
            'events_' || pg_catalog.to_char(v_month, 'YYYY_MM'), v_month, v_month + interval '1 month');
        v_month := v_month + interval '1 month';
    end loop;
    -- An event later than three months ahead cannot exist (ingest refuses 5 minutes ahead), but a
    -- directly inserted one could: it gets its month too.
    for v_month in
        select distinct pg_catalog.date_trunc('month', occurred_at) from meter.events_unpartitioned
        where occurred_at >= v_last + interval '1 month'
    loop
        execute pg_catalog.format(
            'create table meter.%I partition of meter.events for values from (%L) to (%L)',
            'events_' || pg_catalog.to_char(v_month, 'YYYY_MM'), v_month, v_month + interval '1 month');
    end loop;
end;
$$;

-- 4. The events, as they are.
insert into meter.events (id, customer_id, meter_id, idempotency_key, occurred_at, received_at, value, properties, xid)
select id, customer_id, meter_id, idempotency_key, occurred_at, received_at, value, properties, xid
from meter.events_unpartitioned;

-- 5. Their keys.
insert into meter.event_keys (customer_id, idempotency_key, event_id, occurred_at)
select customer_id, idempotency_key, id, occurred_at
from meter.events_unpartitioned;

-- 6. The old table goes. What is built on it is dropped by name first and re-created by the
-- migrator right after this migration (sql/views, sql/functions); anything else depending on it
-- (a view of your own) makes the drop fail, and the whole migration with it, rather than
-- vanish silently: recreate it on meter.events afterwards.
drop view if exists meter.reconciliation;
drop view if exists meter.late_after_close;
drop view if exists meter.event_daily;
drop function if exists meter._line_events(bigint, bigint, timestamptz, timestamptz, bigint, jsonb);
drop table meter.events_unpartitioned;

analyze meter.events;
analyze meter.event_keys;
