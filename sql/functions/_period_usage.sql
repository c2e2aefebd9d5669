-- meter._period_usage(customer_id, meter_id, from, to): a meter's billable quantity and event
-- count for [from, to), from the hourly rollups (the figures period_close invoices).
--
--   count -> events; sum -> Σ quantity; max -> the largest hourly maximum (0 without events);
--   latest -> the value of the range's last event (the last hour's, by occurred_at then the
--   greatest idempotency key; 0 without events); time_weighted_sum -> Σ of the hours' integrals;
--   unique_count -> distinct values over the whole period (not a sum of hourly counts).
-- A meter whose aggregation changes inside the range is refused (55000): schedule meter versions
-- at period starts.
create or replace function meter._period_usage(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_from        timestamptz,
    p_to          timestamptz)
returns table (event_count bigint, quantity numeric, aggregation text)
language plpgsql
stable
-- (exactly one row: the planner's default of 1,000 made the reconciliation look costly enough to JIT-compile, ~1 s)
rows 1
set search_path = pg_catalog, pg_temp
as $$
declare
    v_aggs text[];
begin
    select pg_catalog.array_agg(distinct v.aggregation) into v_aggs
    from meter.meter_version_ranges v
    where v.meter_id = p_meter_id and v.effective_from < p_to and v.effective_until > p_from;
    if pg_catalog.cardinality(v_aggs) <> 1 then
        raise exception 'meter % changes aggregation within [%, %): %', p_meter_id, p_from, p_to, v_aggs
            using errcode = '55000', hint = 'start new meter versions at a period start';
    end if;
    aggregation := v_aggs[1];

    select coalesce(pg_catalog.sum(r.event_count), 0)::bigint,
           case aggregation
               when 'count' then coalesce(pg_catalog.sum(r.event_count), 0)::numeric
               when 'sum' then coalesce(pg_catalog.sum(r.quantity), 0)
               when 'time_weighted_sum' then coalesce(pg_catalog.sum(r.quantity), 0)
               when 'max' then coalesce(pg_catalog.max(r.max_value) filter (where r.event_count > 0), 0)
               when 'latest' then coalesce((pg_catalog.array_agg(r.latest_value order by r.latest_at desc, r.latest_key collate "C" desc)
                                            filter (where r.latest_at is not null))[1], 0)
           end
      into event_count, quantity
    from meter.rollup_hourly r
    where r.customer_id = p_customer_id and r.meter_id = p_meter_id and r.hour >= p_from and r.hour < p_to;

    if aggregation = 'unique_count' then
        select pg_catalog.count(distinct u.value_hash)::numeric into quantity
        from meter.rollup_hourly_unique u
        where u.customer_id = p_customer_id and u.meter_id = p_meter_id and u.hour >= p_from and u.hour < p_to
          and u.event_count > 0;
    end if;
    return next;
end;
$$;

comment on function meter._period_usage(bigint, bigint, timestamptz, timestamptz) is
    'Billable quantity and event count of a meter over a range, from the hourly rollups.';

revoke all on function meter._period_usage(bigint, bigint, timestamptz, timestamptz) from public;

-- meter.reconciliation calls it, and a view's function calls run with the rights of whoever reads
-- the view: analysts need EXECUTE to read the reconciliation. It runs with the caller's rights and
-- reads only the rollups and meter versions, which analysts may read anyway.
grant execute on function meter._period_usage(bigint, bigint, timestamptz, timestamptz) to meter_analyst;
