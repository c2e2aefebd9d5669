-- meter.rollup_period_rebuild(customer_id): recompute the billing period totals
-- (meter.rollup_period, meter.rollup_period_dims) of one customer, or of all (null), from the
-- hourly rollups. Returns the rows written.
--
-- meter.rollup_run keeps these totals itself; this is for what changes their keys (a customer's
-- billing timezone: meter.customer_upsert calls it) and for repair (a difference listed by
-- meter.rollup_period_verify). Waits for the rollup's advisory lock, so no run adds to the rows
-- while they are rebuilt; the rebuild is committed with the caller's transaction.
create or replace function meter.rollup_period_rebuild(p_customer_id bigint default null)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
    v_n bigint;
    v_d bigint;
begin
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));
    delete from meter.rollup_period p where p_customer_id is null or p.customer_id = p_customer_id;
    delete from meter.rollup_period_dims p where p_customer_id is null or p.customer_id = p_customer_id;
    insert into meter.rollup_period (customer_id, meter_id, period_start, event_count, quantity, max_value)
    select r.customer_id, r.meter_id, meter._period_of(c.billing_timezone, r.hour),
           pg_catalog.sum(r.event_count), pg_catalog.sum(r.quantity),
           pg_catalog.max(r.max_value) filter (where r.event_count > 0)
    from meter.rollup_hourly r
    join meter.customers c on c.id = r.customer_id
    where (p_customer_id is null or r.customer_id = p_customer_id)
      and not exists (select 1 from meter.meter_versions v
                      where v.meter_id = r.meter_id and v.aggregation = 'time_weighted_sum')
    group by 1, 2, 3;
    get diagnostics v_n = row_count;
    insert into meter.rollup_period_dims (customer_id, meter_id, period_start, dims_hash, dims, event_count, quantity, max_value)
    select x.customer_id, x.meter_id, meter._period_of(c.billing_timezone, x.hour), x.dims_hash,
           pg_catalog.min(x.dims::text)::jsonb,
           pg_catalog.sum(x.event_count), pg_catalog.sum(x.quantity),
           pg_catalog.max(x.max_value) filter (where x.event_count > 0)
    from meter.rollup_hourly_dims x
    join meter.customers c on c.id = x.customer_id
    where (p_customer_id is null or x.customer_id = p_customer_id)
      and not exists (select 1 from meter.meter_versions v
                      where v.meter_id = x.meter_id and v.aggregation = 'time_weighted_sum')
    group by 1, 2, 3, 4;
    get diagnostics v_d = row_count;
    return v_n + v_d;
end;
$$;

comment on function meter.rollup_period_rebuild(bigint) is
    'Recomputes the billing period totals (rollup_period, rollup_period_dims) of a customer (null: all) from the hourly rollups.';

revoke all on function meter.rollup_period_rebuild(bigint) from public;
