-- 0023_rollup_ledger: what the rollup folded, hour by hour, kept in the fold's own transaction,
-- so that meter.reconciliation reads it instead of rescanning a month of raw events (issue 21;
-- decision 123).
--
--   rollup_ledger       (customer, meter, hour, dimension values) -> events folded, cancellations
--                       folded, duplicates acknowledged, events and cancellations folded after
--                       the close of the hour's period (late), Σ value in and out, and a checksum
--                       of the idempotency keys (Σ hashtextextended(key, 0), in minus out)
--
-- The ledger is a second account of the same folds, written by its own statements from the events
-- themselves: the rollup rows are the aggregate (count, Σ, max, distinct values, latest, integral),
-- the ledger what went in. For count and sum meters the ledger determines the quantity (events -
-- cancelled, value_in - value_out), so the reconciliation's "rollup differs from raw events" is a
-- comparison of two accounts; for the others it compares event counts. The full recomputation
-- from raw events (meter.reconciliation_verify) stays, as a separate verification.
--
-- Redeliveries are folded too, in (xid, id) order below the same horizon as events (the reason
-- events carry their xid: a redelivery committed late can never fall behind the position), with
-- their own position on the watermark's row; they carry their event's occurred_at so that the
-- fold finds the event in its month's partition.
--
-- (A redelivery recorded by an ingest still on the functions before this migration has no
-- occurred_at: the fold then finds its event by id in every partition.)
--
-- Backfilled here, under the rollup's advisory lock, from the events and cancellations folded so
-- far (late: received or cancelled after the close of the period, as the view counted them) and
-- from every stored redelivery (position at its start: the next run also folds those recorded
-- by a transaction still running). Functions are applied after migrations, so the backfill is
-- written with built-ins only, and runs only when there are events.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

-- The rollup's lock first, before any table lock: a run holding it would otherwise wait for this
-- migration's ALTERs while this waited for it.
select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));

-- Until the functions are re-applied (right after the migrations, in another transaction), the
-- rollup_run before this migration would go on folding without writing the ledger, which would
-- then be short of those events for good: it refuses instead, until `meterctl migrate` finishes.
create or replace function meter.rollup_run(p_max_events integer default 1000000)
returns meter.rollup_result
language plpgsql
set search_path = pg_catalog, pg_temp
as $stub$
begin
    raise exception 'migration 0023 is applied but not yet the functions that go with it'
        using errcode = '55000', hint = 'let meterctl migrate finish (it re-applies sql/functions)';
end;
$stub$;

create table meter.rollup_ledger (
    customer_id  bigint not null,
    meter_id     bigint not null,
    hour         timestamptz not null,
    dims_hash    bytea not null,
    dims         jsonb not null,
    events       bigint not null default 0,
    cancelled    bigint not null default 0,
    duplicates   bigint not null default 0,
    late         bigint not null default 0,
    value_in     numeric not null default 0,
    value_out    numeric not null default 0,
    key_checksum numeric not null default 0,
    updated_at   timestamptz not null default pg_catalog.now(),
    constraint rollup_ledger_pkey primary key (customer_id, meter_id, hour, dims_hash),
    constraint rollup_ledger_dims_object check (pg_catalog.jsonb_typeof(dims) = 'object'),
    constraint rollup_ledger_counts check (events >= 0 and cancelled >= 0 and duplicates >= 0 and late >= 0)
);
comment on table meter.rollup_ledger is
    'What meter.rollup_run folded per customer, meter, hour and dimension values: events, cancellations, duplicates, late arrivals, values in and out, a key checksum.';
comment on column meter.rollup_ledger.dims is
    'The dimension values of the version in force at the hour ({} for a version without dimensions), as in rollup_hourly_dims.';
comment on column meter.rollup_ledger.dims_hash is 'SHA-256 of dims::text.';
comment on column meter.rollup_ledger.events is 'Events folded into the hour (those cancelled later included).';
comment on column meter.rollup_ledger.cancelled is 'Cancellations of the hour''s events folded (subtracted from the rollups).';
comment on column meter.rollup_ledger.duplicates is 'Redeliveries of the hour''s events acknowledged as duplicates (meter.event_redeliveries).';
comment on column meter.rollup_ledger.late is
    'Events and cancellations folded after the customer''s invoice for the hour''s period was closed.';
comment on column meter.rollup_ledger.value_in is 'Σ value of the events folded.';
comment on column meter.rollup_ledger.value_out is 'Σ value of the events whose cancellation was folded.';
comment on column meter.rollup_ledger.key_checksum is
    'Σ hashtextextended(idempotency_key, 0) of the events folded minus that of the events cancelled: recomputable in psql.';
grant select on meter.rollup_ledger to meter_analyst;
-- Every rollup run asks for the end of the latest closed period (no hour after it can be late):
-- one index probe instead of a scan of all invoices on the hot path.
create index invoices_period_end on meter.invoices (period_end);

-- Redeliveries: the transaction that recorded them (the fold's order) and their event's time.
alter table meter.event_redeliveries
    add column xid xid8 not null default pg_catalog.pg_current_xact_id(),
    add column occurred_at timestamptz;
comment on column meter.event_redeliveries.xid is 'The recording transaction''s id: the rollup folds redeliveries in (xid, id) order.';
comment on column meter.event_redeliveries.occurred_at is 'The event''s occurred_at (its partition); null for rows older than migration 0023 whose event was gone.';
create index event_redeliveries_xid_id on meter.event_redeliveries (xid, id);

alter table meter.rollup_watermark
    add column redeliveries_xid xid8 not null default '0',
    add column redeliveries_id  bigint not null default 0,
    add column redeliveries_total bigint not null default 0;
comment on column meter.rollup_watermark.redeliveries_xid is
    'Redeliveries with (xid, id) below (redeliveries_xid, redeliveries_id) are counted in meter.rollup_ledger.';

update meter.event_redeliveries r set occurred_at = e.occurred_at
from meter.events e
where e.id = r.event_id;

do $backfill$
begin
    if not exists (select 1 from meter.events) then
        return;
    end if;
    -- events folded so far and the cancellations subtracted, with the dimension values of the
    -- version in force at their hour
    insert into meter.rollup_ledger as l
           (customer_id, meter_id, hour, dims_hash, dims, events, cancelled, late, value_in, value_out, key_checksum)
    select g.customer_id, g.meter_id, g.hour, pg_catalog.sha256(pg_catalog.convert_to(g.dims::text, 'UTF8')), g.dims,
           g.events, g.cancelled, g.late, g.value_in, g.value_out, g.key_checksum
    from (
        select e.customer_id, e.meter_id,
               pg_catalog.date_bin(interval '1 hour', e.occurred_at, timestamptz '2000-01-01 00:00:00+00') as hour,
               coalesce((select pg_catalog.jsonb_object_agg(d.name, e.properties ->> d.name)
                         from pg_catalog.unnest(v.dimensions) as d(name)), '{}'::jsonb) as dims,
               pg_catalog.count(*) as events,
               pg_catalog.count(*) filter (where x.rolled_up_at is not null) as cancelled,
               pg_catalog.count(*) filter (where e.received_at > i.closed_at)
                 + pg_catalog.count(*) filter (where x.rolled_up_at is not null and x.cancelled_at > i.closed_at) as late,
               pg_catalog.sum(e.value) as value_in,
               coalesce(pg_catalog.sum(e.value) filter (where x.rolled_up_at is not null), 0) as value_out,
               pg_catalog.sum(pg_catalog.hashtextextended(e.idempotency_key, 0))
                 - coalesce(pg_catalog.sum(pg_catalog.hashtextextended(e.idempotency_key, 0)) filter (where x.rolled_up_at is not null), 0)
                 as key_checksum
        from meter.events e
        cross join meter.rollup_watermark w
        left join meter.meter_version_ranges v
               on v.meter_id = e.meter_id and pg_catalog.cardinality(v.dimensions) > 0
              and pg_catalog.date_bin(interval '1 hour', e.occurred_at, timestamptz '2000-01-01 00:00:00+00') >= v.effective_from
              and pg_catalog.date_bin(interval '1 hour', e.occurred_at, timestamptz '2000-01-01 00:00:00+00') < v.effective_until
        left join meter.event_cancellations x on x.event_id = e.id
        left join meter.invoices i
               on i.customer_id = e.customer_id and e.occurred_at >= i.period_start and e.occurred_at < i.period_end
        where w.name = 'events' and (e.xid, e.id) < (w.position_xid, w.position_id)
        group by 1, 2, 3, 4
    ) g;
end;
$backfill$;
