-- meter._period_usage(customer_id, meter_id, from, to): a meter's billable quantity and event
-- count for [from, to), from the hourly rollups (the figures period_close invoices).
--
--   count -> events; sum -> Σ quantity; max -> the largest hourly maximum (0 without events);
--   latest -> the value of the range's last event (the last hour's, by occurred_at then the
--   greatest idempotency key; 0 without events); time_weighted_sum -> Σ of the hours' integrals;
--   unique_count -> distinct values over the whole period (not a sum of hourly counts).
-- A meter whose aggregation changes inside the range is refused (55000): schedule meter versions
-- at period starts. meter._line_figures for one request without a plan (the whole meter): the
-- rules are written there, once.
create or replace function meter._period_usage(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_from        timestamptz,
    p_to          timestamptz)
returns table (event_count bigint, quantity numeric, aggregation text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select f.event_count, f.quantity, f.aggregation
    from meter._line_figures(array[p_customer_id], array[p_meter_id], array[p_from], array[p_to],
                             array[null::bigint], array['{}'::jsonb]) f
$$;

comment on function meter._period_usage(bigint, bigint, timestamptz, timestamptz) is
    'Billable quantity and event count of a meter over a range, from the hourly rollups.';

revoke all on function meter._period_usage(bigint, bigint, timestamptz, timestamptz) from public;

-- meter.reconciliation calls it, and a view's function calls run with the rights of whoever reads
-- the view: analysts need EXECUTE to read the reconciliation. It runs with the caller's rights and
-- reads only the rollups and meter versions, which analysts may read anyway.
grant execute on function meter._period_usage(bigint, bigint, timestamptz, timestamptz) to meter_analyst;
