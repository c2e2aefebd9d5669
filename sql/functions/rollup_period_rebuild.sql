-- meter.rollup_period_rebuild(customer_id): recompute the billing period totals
-- (meter.rollup_period, meter.rollup_period_dims) of one customer, or of all (null), from the
-- hourly rollups, and the ledger's period rows (meter.rollup_ledger_period) from its hours.
-- Returns the rows written.
--
-- meter.rollup_run keeps these totals itself; this is for what changes their keys (a customer's
-- billing timezone: meter.customer_upsert calls it) and for repair (a difference listed by
-- meter.rollup_period_verify or meter.rollup_ledger_period_verify). The totals are
-- meter._rollup_period_from_hours' and meter._rollup_ledger_period_from_hours'. Waits for the rollup's advisory lock, so no run adds to the rows
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
    v_l bigint;
begin
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));
    delete from meter.rollup_period p where p_customer_id is null or p.customer_id = p_customer_id;
    delete from meter.rollup_period_dims p where p_customer_id is null or p.customer_id = p_customer_id;
    insert into meter.rollup_period (customer_id, meter_id, period_start, event_count, quantity, max_value)
    select h.customer_id, h.meter_id, h.period_start, h.event_count, h.quantity, h.max_value
    from meter._rollup_period_from_hours(p_customer_id) h
    where h.dims_hash is null;
    get diagnostics v_n = row_count;
    insert into meter.rollup_period_dims (customer_id, meter_id, period_start, dims_hash, dims, event_count, quantity, max_value)
    select h.customer_id, h.meter_id, h.period_start, h.dims_hash, h.dims, h.event_count, h.quantity, h.max_value
    from meter._rollup_period_from_hours(p_customer_id) h
    where h.dims_hash is not null;
    get diagnostics v_d = row_count;
    -- the ledger's period rows likewise, from its hours (decision 124)
    delete from meter.rollup_ledger_period p where p_customer_id is null or p.customer_id = p_customer_id;
    insert into meter.rollup_ledger_period
           (customer_id, meter_id, period_start, dims_hash, dims, events, cancelled, duplicates, late,
            value_in, value_out, key_checksum)
    select h.customer_id, h.meter_id, h.period_start, h.dims_hash, h.dims, h.events, h.cancelled, h.duplicates, h.late,
           h.value_in, h.value_out, h.key_checksum
    from meter._rollup_ledger_period_from_hours(p_customer_id) h;
    get diagnostics v_l = row_count;
    return v_n + v_d + v_l;
end;
$$;

comment on function meter.rollup_period_rebuild(bigint) is
    'Recomputes the billing period totals (rollup_period, rollup_period_dims, rollup_ledger_period) of a customer (null: all) from the hours.';

revoke all on function meter.rollup_period_rebuild(bigint) from public;
