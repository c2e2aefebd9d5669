-- meter.rollup_ledger_period_verify(customer_id): the ledger's period rows
-- (meter.rollup_ledger_period) that differ from Σ of their hours (meter.rollup_ledger), for one
-- customer or all (null); empty when all is well. `period` and `hours` hold the seven counters of
-- each side (events, cancelled, duplicates, late, value_in, value_out, key_checksum); a row missing
-- on one side shows null there.
--
-- meter.rollup_run keeps both in the same transaction (decision 124), so a row here means a bug
-- or a hand edit; meter.rollup_period_rebuild recomputes the period rows from the hours.
create or replace function meter.rollup_ledger_period_verify(p_customer_id bigint default null)
returns table (customer_id bigint, meter_id bigint, period_start timestamptz, dims jsonb, period jsonb, hours jsonb)
language sql
stable
security definer  -- analysts may run it
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
    with hours as (
        select h.*, pg_catalog.jsonb_build_object('events', h.events, 'cancelled', h.cancelled, 'duplicates', h.duplicates,
                                                  'late', h.late, 'value_in', h.value_in, 'value_out', h.value_out,
                                                  'key_checksum', h.key_checksum) as figures
        from meter._rollup_ledger_period_from_hours(p_customer_id) h
    ),
    period as (
        select p.*, pg_catalog.jsonb_build_object('events', p.events, 'cancelled', p.cancelled, 'duplicates', p.duplicates,
                                                  'late', p.late, 'value_in', p.value_in, 'value_out', p.value_out,
                                                  'key_checksum', p.key_checksum) as figures
        from meter.rollup_ledger_period p
        where p_customer_id is null or p.customer_id = p_customer_id
    )
    select coalesce(p.customer_id, h.customer_id), coalesce(p.meter_id, h.meter_id), coalesce(p.period_start, h.period_start),
           coalesce(p.dims, h.dims), p.figures, h.figures
    from period p
    full join hours h on h.customer_id = p.customer_id and h.meter_id = p.meter_id
                     and h.period_start = p.period_start and h.dims_hash = p.dims_hash
    where p.figures is distinct from h.figures
    order by 1, 2, 3, 4
$$;

comment on function meter.rollup_ledger_period_verify(bigint) is
    'Lists the ledger''s period rows (rollup_ledger_period) that differ from Σ of their hours (rollup_ledger); empty when all is well.';

revoke all on function meter.rollup_ledger_period_verify(bigint) from public;
grant execute on function meter.rollup_ledger_period_verify(bigint) to meter_analyst;
