-- meter._rollup_period_from_hours(customer_id): the billing period totals recomputed from the
-- hourly rollups, for one customer (null: every customer): what meter.rollup_period (dims_hash
-- and dims null) and meter.rollup_period_dims (one row per combination of values) must hold.
-- Σ event_count, Σ quantity and the largest max_value of the hours with events of each
-- customer's billing period (meter._period_of), for every meter without a time-weighted
-- version (gauges are integrated, not folded, and not kept there).
--
-- The one definition of those totals outside the rollup: meter.rollup_period_rebuild writes them,
-- meter.rollup_period_verify compares the tables with them.
create or replace function meter._rollup_period_from_hours(p_customer_id bigint)
returns table (customer_id bigint, meter_id bigint, period_start timestamptz, dims_hash bytea, dims jsonb,
               event_count bigint, quantity numeric, max_value numeric)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    with kept as (
        select m.id from meter.meters m
        where not exists (select 1 from meter.meter_versions v where v.meter_id = m.id and v.aggregation = 'time_weighted_sum')
    )
    select r.customer_id, r.meter_id, meter._period_of(c.billing_timezone, r.hour), null::bytea, null::jsonb,
           pg_catalog.sum(r.event_count)::bigint, pg_catalog.sum(r.quantity),
           pg_catalog.max(r.max_value) filter (where r.event_count > 0)
    from meter.rollup_hourly r
    join meter.customers c on c.id = r.customer_id
    where r.meter_id in (select id from kept) and (p_customer_id is null or r.customer_id = p_customer_id)
    group by 1, 2, 3
    union all
    select x.customer_id, x.meter_id, meter._period_of(c.billing_timezone, x.hour), x.dims_hash,
           pg_catalog.min(x.dims::text)::jsonb,
           pg_catalog.sum(x.event_count)::bigint, pg_catalog.sum(x.quantity),
           pg_catalog.max(x.max_value) filter (where x.event_count > 0)
    from meter.rollup_hourly_dims x
    join meter.customers c on c.id = x.customer_id
    where x.meter_id in (select id from kept) and (p_customer_id is null or x.customer_id = p_customer_id)
    group by 1, 2, 3, 4
$$;

comment on function meter._rollup_period_from_hours(bigint) is
    'Billing period totals (whole meter, and per dimension values) recomputed from the hourly rollups; gauges excluded.';

revoke all on function meter._rollup_period_from_hours(bigint) from public;
