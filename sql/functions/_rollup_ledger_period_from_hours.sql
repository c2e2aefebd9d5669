-- meter._rollup_ledger_period_from_hours(customer_id): the ledger's period rows recomputed from
-- its hours, for one customer (null: every customer): what meter.rollup_ledger_period must hold.
-- Each counter of meter.rollup_ledger summed over the hours of each customer's billing period
-- (meter._period_of) and dimension values (dims_hash). Every meter, gauges included (the ledger
-- counts what was folded, whatever the aggregation).
--
-- The one definition of those rows outside the rollup: meter.rollup_period_rebuild writes them,
-- meter.rollup_ledger_period_verify compares the table with them (decision 124).
create or replace function meter._rollup_ledger_period_from_hours(p_customer_id bigint)
returns table (customer_id bigint, meter_id bigint, period_start timestamptz, dims_hash bytea, dims jsonb,
               events bigint, cancelled bigint, duplicates bigint, late bigint,
               value_in numeric, value_out numeric, key_checksum numeric)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select l.customer_id, l.meter_id, meter._period_of(c.billing_timezone, l.hour), l.dims_hash,
           pg_catalog.min(l.dims::text)::jsonb,
           pg_catalog.sum(l.events)::bigint, pg_catalog.sum(l.cancelled)::bigint, pg_catalog.sum(l.duplicates)::bigint,
           pg_catalog.sum(l.late)::bigint, pg_catalog.sum(l.value_in), pg_catalog.sum(l.value_out),
           pg_catalog.sum(l.key_checksum)
    from meter.rollup_ledger l
    join meter.customers c on c.id = l.customer_id
    where p_customer_id is null or l.customer_id = p_customer_id
    group by 1, 2, 3, 4
$$;

comment on function meter._rollup_ledger_period_from_hours(bigint) is
    'The ledger''s period rows (rollup_ledger_period) recomputed from its hours (rollup_ledger).';

revoke all on function meter._rollup_ledger_period_from_hours(bigint) from public;
