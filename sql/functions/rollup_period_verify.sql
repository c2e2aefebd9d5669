-- meter.rollup_period_verify(customer_id): recompute the billing period totals of a customer (null:
-- every customer) from the hourly rollups and list every period, and every period's dimension
-- values, where meter.rollup_period / meter.rollup_period_dims differ. Empty when all is well.
--
-- "All is well": each row holds Σ event_count, Σ quantity and the largest max_value of the hours
-- (with events) of its customer's billing period, for every meter without a time-weighted
-- version (meter._rollup_period_from_hours, the same recomputation as rollup_period_rebuild's);
-- dims null for the whole-meter row. A missing row counts as zeros. It
-- checks the period totals against the hourly rows; meter.rollup_verify checks the hourly rows
-- against raw events. One statement, so one snapshot.
create or replace function meter.rollup_period_verify(p_customer_id bigint default null)
returns table (
    customer_id     bigint,
    meter_id        bigint,
    period_start    timestamptz,
    dims            jsonb,
    period_events   bigint,
    hourly_events   bigint,
    period_quantity numeric,
    hourly_quantity numeric,
    period_max      numeric,
    hourly_max      numeric
)
language sql
stable
security definer  -- analysts may run it
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
    with hourly as (
        select h.* from meter._rollup_period_from_hours(p_customer_id) h where h.dims_hash is null
    ),
    hourly_dims as (
        select h.* from meter._rollup_period_from_hours(p_customer_id) h where h.dims_hash is not null
    ),
    period as (
        select p.* from meter.rollup_period p where p_customer_id is null or p.customer_id = p_customer_id
    ),
    period_dims as (
        select p.* from meter.rollup_period_dims p where p_customer_id is null or p.customer_id = p_customer_id
    )
    select coalesce(p.customer_id, h.customer_id), coalesce(p.meter_id, h.meter_id), coalesce(p.period_start, h.period_start),
           null::jsonb, coalesce(p.event_count, 0), coalesce(h.event_count, 0), coalesce(p.quantity, 0), coalesce(h.quantity, 0),
           p.max_value, h.max_value
    from period p
    full join hourly h on h.customer_id = p.customer_id and h.meter_id = p.meter_id and h.period_start = p.period_start
    where coalesce(p.event_count, 0) <> coalesce(h.event_count, 0) or coalesce(p.quantity, 0) <> coalesce(h.quantity, 0)
       or p.max_value is distinct from h.max_value
    union all
    select coalesce(p.customer_id, h.customer_id), coalesce(p.meter_id, h.meter_id), coalesce(p.period_start, h.period_start),
           coalesce(p.dims, h.dims), coalesce(p.event_count, 0), coalesce(h.event_count, 0), coalesce(p.quantity, 0), coalesce(h.quantity, 0),
           p.max_value, h.max_value
    from period_dims p
    full join hourly_dims h on h.customer_id = p.customer_id and h.meter_id = p.meter_id
                           and h.period_start = p.period_start and h.dims_hash = p.dims_hash
    where coalesce(p.event_count, 0) <> coalesce(h.event_count, 0) or coalesce(p.quantity, 0) <> coalesce(h.quantity, 0)
       or p.max_value is distinct from h.max_value
    order by 1, 2, 3, 4 nulls first
$$;

comment on function meter.rollup_period_verify(bigint) is
    'Lists the billing period totals (rollup_period, rollup_period_dims) that differ from their hourly rollups; empty when all is well.';

revoke all on function meter.rollup_period_verify(bigint) from public;
grant execute on function meter.rollup_period_verify(bigint) to meter_analyst;
