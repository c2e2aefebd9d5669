-- meter._rollup_ledger_add(...): add rows to the rollup's ledger, hour by hour
-- (meter.rollup_ledger) and, the same rows grouped by the customer's billing period
-- (meter._period_of), to its period rows (meter.rollup_ledger_period): the one place both are
-- written, so a period row is Σ of its hours (decision 124). For meter._rollup_fold, in its
-- transaction: the events it folds (events, late, value_in, key_checksum), the cancellations it
-- subtracts (cancelled, late, value_out, minus their keys' checksum) and the duplicates it counts.
--
-- Parallel arrays, one element per (customer, meter, hour, dims_hash), unique within a call (ON
-- CONFLICT adds each to its row once); a counter array may be null (nothing to add: 0).
create or replace function meter._rollup_ledger_add(
    p_customers     bigint[],
    p_meters        bigint[],
    p_hours         timestamptz[],
    p_dims_hashes   bytea[],
    p_dims          jsonb[],
    p_events        bigint[],
    p_cancelled     bigint[],
    p_duplicates    bigint[],
    p_late          bigint[],
    p_value_in      numeric[],
    p_value_out     numeric[],
    p_key_checksums numeric[])
returns void
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
    with r as materialized (
        select x.customer_id, x.meter_id, x.hour, x.dims_hash, x.dims,
               coalesce(x.events, 0) as events, coalesce(x.cancelled, 0) as cancelled,
               coalesce(x.duplicates, 0) as duplicates, coalesce(x.late, 0) as late,
               coalesce(x.value_in, 0) as value_in, coalesce(x.value_out, 0) as value_out,
               coalesce(x.key_checksum, 0) as key_checksum
        from rows from (pg_catalog.unnest(p_customers), pg_catalog.unnest(p_meters), pg_catalog.unnest(p_hours),
                        pg_catalog.unnest(p_dims_hashes), pg_catalog.unnest(p_dims), pg_catalog.unnest(p_events),
                        pg_catalog.unnest(p_cancelled), pg_catalog.unnest(p_duplicates), pg_catalog.unnest(p_late),
                        pg_catalog.unnest(p_value_in), pg_catalog.unnest(p_value_out), pg_catalog.unnest(p_key_checksums))
             as x(customer_id, meter_id, hour, dims_hash, dims, events, cancelled, duplicates, late,
                  value_in, value_out, key_checksum)
        where x.customer_id is not null
    ),
    hours as (
        insert into meter.rollup_ledger as l
               (customer_id, meter_id, hour, dims_hash, dims, events, cancelled, duplicates, late, value_in, value_out, key_checksum)
        select r.customer_id, r.meter_id, r.hour, r.dims_hash, r.dims, r.events, r.cancelled, r.duplicates, r.late,
               r.value_in, r.value_out, r.key_checksum
        from r
        on conflict (customer_id, meter_id, hour, dims_hash) do update
            set events       = l.events + excluded.events,
                cancelled    = l.cancelled + excluded.cancelled,
                duplicates   = l.duplicates + excluded.duplicates,
                late         = l.late + excluded.late,
                value_in     = l.value_in + excluded.value_in,
                value_out    = l.value_out + excluded.value_out,
                key_checksum = l.key_checksum + excluded.key_checksum,
                updated_at   = pg_catalog.now()
        returning 1
    )
    -- (hours is not read: a data-modifying CTE runs to completion all the same)
    insert into meter.rollup_ledger_period as l
           (customer_id, meter_id, period_start, dims_hash, dims, events, cancelled, duplicates, late, value_in, value_out, key_checksum)
    select r.customer_id, r.meter_id, meter._period_of(c.billing_timezone, r.hour), r.dims_hash,
           pg_catalog.min(r.dims::text)::jsonb, pg_catalog.sum(r.events), pg_catalog.sum(r.cancelled),
           pg_catalog.sum(r.duplicates), pg_catalog.sum(r.late), pg_catalog.sum(r.value_in), pg_catalog.sum(r.value_out),
           pg_catalog.sum(r.key_checksum)
    from r
    join meter.customers c on c.id = r.customer_id
    group by 1, 2, 3, 4
    on conflict (customer_id, meter_id, period_start, dims_hash) do update
        set events       = l.events + excluded.events,
            cancelled    = l.cancelled + excluded.cancelled,
            duplicates   = l.duplicates + excluded.duplicates,
            late         = l.late + excluded.late,
            value_in     = l.value_in + excluded.value_in,
            value_out    = l.value_out + excluded.value_out,
            key_checksum = l.key_checksum + excluded.key_checksum,
            updated_at   = pg_catalog.now()
$$;

comment on function meter._rollup_ledger_add(bigint[], bigint[], timestamptz[], bytea[], jsonb[], bigint[], bigint[], bigint[], bigint[], numeric[], numeric[], numeric[]) is
    'Adds rows to the rollup''s ledger, per hour and, grouped by billing period, to its period rows: the one place both are written.';

revoke all on function meter._rollup_ledger_add(bigint[], bigint[], timestamptz[], bytea[], jsonb[], bigint[], bigint[], bigint[], bigint[], numeric[], numeric[], numeric[]) from public;
