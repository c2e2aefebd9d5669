-- 0019_rollup_period: the billing period's totals so far, per customer and meter (and per
-- dimension values), kept by the rollup in its own transaction (issue 16: the limit check reads
-- one row where it read a month of hourly rows).
--
--   rollup_period       (customer, meter, period_start) -> Σ events, Σ value and the largest value
--                       of the period's hours in meter.rollup_hourly
--   rollup_period_dims  the same per dimension values, from meter.rollup_hourly_dims
--
-- period_start is the start of the customer's billing period (a calendar month in its billing
-- timezone, meter.billing_period) that holds the hour. Exactly Σ of the hourly rows, by
-- construction: meter.rollup_run adds the same groups to both in one statement, subtracts
-- cancellations from both in another, recomputes the maxima of the periods whose hours it
-- recomputes; meter.rollup_period_verify lists any difference. Time-weighted gauges are left out
-- (their hours are integrated, not folded, and no limit applies to them). A customer's billing
-- timezone change rebuilds its rows (meter.customer_upsert, under the rollup's lock).
--
-- Backfilled here from the hourly rows, under the rollup's advisory lock. (A rollup run by a
-- process still on the previous functions between this migration's commit and the functions'
-- re-application would not add to these tables: upgrade with the services stopped, as the
-- runbook says, or run `select meter.rollup_period_rebuild();` after.)
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

create table meter.rollup_period (
    customer_id  bigint not null,
    meter_id     bigint not null,
    period_start timestamptz not null,
    event_count  bigint not null,
    quantity     numeric not null,
    max_value    numeric,                   -- null when no hour of the period holds an event
    updated_at   timestamptz not null default pg_catalog.now(),
    constraint rollup_period_pkey primary key (customer_id, meter_id, period_start)
);
comment on table meter.rollup_period is
    'Per customer, meter and billing period: Σ of its rollup_hourly rows so far (events, value, max); gauges excluded.';

create table meter.rollup_period_dims (
    customer_id  bigint not null,
    meter_id     bigint not null,
    period_start timestamptz not null,
    dims_hash    bytea not null,
    dims         jsonb not null,
    event_count  bigint not null,
    quantity     numeric not null,
    max_value    numeric,
    updated_at   timestamptz not null default pg_catalog.now(),
    constraint rollup_period_dims_pkey primary key (customer_id, meter_id, period_start, dims_hash),
    constraint rollup_period_dims_object check (pg_catalog.jsonb_typeof(dims) = 'object')
);
comment on table meter.rollup_period_dims is
    'Per customer, meter, billing period and dimension values: Σ of its rollup_hourly_dims rows so far; gauges excluded.';
comment on column meter.rollup_period_dims.dims_hash is 'SHA-256 of dims::text, as in rollup_hourly_dims.';

grant select on meter.rollup_period, meter.rollup_period_dims to meter_analyst;

select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));

insert into meter.rollup_period (customer_id, meter_id, period_start, event_count, quantity, max_value)
select r.customer_id, r.meter_id,
       pg_catalog.date_trunc('month', r.hour at time zone c.billing_timezone) at time zone c.billing_timezone,
       pg_catalog.sum(r.event_count), pg_catalog.sum(r.quantity),
       pg_catalog.max(r.max_value) filter (where r.event_count > 0)
from meter.rollup_hourly r
join meter.customers c on c.id = r.customer_id
where not exists (select 1 from meter.meter_versions v
                  where v.meter_id = r.meter_id and v.aggregation = 'time_weighted_sum')
group by 1, 2, 3;

insert into meter.rollup_period_dims (customer_id, meter_id, period_start, dims_hash, dims, event_count, quantity, max_value)
select x.customer_id, x.meter_id,
       pg_catalog.date_trunc('month', x.hour at time zone c.billing_timezone) at time zone c.billing_timezone,
       x.dims_hash, pg_catalog.min(x.dims::text)::jsonb,
       pg_catalog.sum(x.event_count), pg_catalog.sum(x.quantity),
       pg_catalog.max(x.max_value) filter (where x.event_count > 0)
from meter.rollup_hourly_dims x
join meter.customers c on c.id = x.customer_id
where not exists (select 1 from meter.meter_versions v
                  where v.meter_id = x.meter_id and v.aggregation = 'time_weighted_sum')
group by 1, 2, 3, 4;

-- meter._limit_rolled read a limit's usage from the hourly rows; the view meter.limit_usage
-- (sql/views/limit_usage.sql) reads it from these totals now.
drop function if exists meter._limit_rolled(bigint, bigint, jsonb, timestamptz, timestamptz, text);
