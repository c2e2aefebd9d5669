-- meter._line_usage(customer_id, meter_id, from, to, plan_id, filter): the billable quantity and
-- event count of one invoice line: the part of a meter's usage in [from, to) that the plan prices
-- with `filter`.
--
-- A whole billing period of the customer: meter._line_figures (the close's figures, from the
-- period totals where they are kept). Any other range: a meter the plan prices without filters
-- is one line: meter._period_usage, unchanged. Otherwise
-- the hourly rows per dimension values (meter.rollup_hourly_dims) whose values the plan prices with
-- this filter (meter._dims_priced_by): count -> Σ events, sum and time_weighted_sum -> Σ quantity
-- (a gauge's dimension rows hold each combination's integral), max -> the largest hourly maximum
-- of those rows (0 without events). meter.plan_price_set admits filters on these four only
-- (distinct values and last values are not kept per dimension).
create or replace function meter._line_usage(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_from        timestamptz,
    p_to          timestamptz,
    p_plan_id     bigint,
    p_filter      jsonb)
returns table (event_count bigint, quantity numeric, aggregation text)
language plpgsql
stable
-- (exactly one row: the planner's default of 1,000 made the reconciliation look costly enough to JIT-compile, ~1 s)
rows 1
-- (the analyst's reconciliation calls it: it reads the customer's billing timezone, which the
-- analyst may not, to know a whole period; it returns figures of rollups the analyst may read)
security definer
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_whole record;
begin
    -- A whole billing period of the customer (every usage line of a close): the close's own
    -- figures (meter._line_figures), which read the period's totals for count and sum meters
    -- (meter.rollup_period, and rollup_period_dims per filter; decision 124) instead of its hours.
    if exists (select 1 from meter.customers c
               where c.id = p_customer_id and meter._is_billing_period(c.billing_timezone, p_from, p_to)) then
        return query
        select f.event_count, f.quantity, f.aggregation
        from meter._line_figures(array[p_customer_id], array[p_meter_id], array[p_from], array[p_to],
                                 array[p_plan_id], array[p_filter]) f;
        return;
    end if;
    -- the whole meter (and the aggregation check: one aggregation over the range)
    select * into v_whole from meter._period_usage(p_customer_id, p_meter_id, p_from, p_to);
    aggregation := v_whole.aggregation;
    if not exists (select 1 from meter.plan_prices pp
                   where pp.plan_id = p_plan_id and pp.meter_id = p_meter_id and pp.filter <> '{}'::jsonb) then
        event_count := v_whole.event_count; quantity := v_whole.quantity;
        return next;
        return;
    end if;
    if aggregation not in ('count', 'sum', 'max', 'time_weighted_sum') then
        raise exception 'meter % (%) has prices per filter, which only count, sum, max and time_weighted_sum meters can have',
            p_meter_id, aggregation using errcode = '0A000';
    end if;

    -- Grouped by dimension values first, so that each combination is assigned to a price once.
    -- Hours under a meter version without dimensions have no rollup_hourly_dims rows: their
    -- rollup_hourly rows count under no values ('{}', where every dimension is "none").
    select coalesce(pg_catalog.sum(g.n), 0)::bigint,
           case aggregation
               when 'count' then coalesce(pg_catalog.sum(g.n), 0)::numeric
               when 'sum' then coalesce(pg_catalog.sum(g.q), 0)
               when 'time_weighted_sum' then coalesce(pg_catalog.sum(g.q), 0)
               when 'max' then coalesce(pg_catalog.max(g.mx), 0)
           end
      into event_count, quantity
    from (select x.dims, pg_catalog.sum(x.event_count) as n, pg_catalog.sum(x.quantity) as q,
                 pg_catalog.max(x.max_value) filter (where x.event_count > 0) as mx
          from (select d.dims, d.event_count, d.quantity, d.max_value
                from meter.rollup_hourly_dims d
                where d.customer_id = p_customer_id and d.meter_id = p_meter_id and d.hour >= p_from and d.hour < p_to
                union all
                select '{}'::jsonb, r.event_count, r.quantity, r.max_value
                from meter.rollup_hourly r
                join meter.meter_version_ranges v
                  on v.meter_id = r.meter_id and r.hour >= v.effective_from and r.hour < v.effective_until
                where r.customer_id = p_customer_id and r.meter_id = p_meter_id and r.hour >= p_from and r.hour < p_to
                  and pg_catalog.cardinality(v.dimensions) = 0) x
          group by x.dims
          -- (a fence: the price is found once per combination, not pushed down to every hour's row)
          offset 0) g
    where meter._dims_priced_by(p_plan_id, p_meter_id, g.dims) = p_filter;
    return next;
end;
$$;

comment on function meter._line_usage(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) is
    'Billable quantity and event count of an invoice line: the part of a meter''s usage a plan prices with a filter.';
revoke all on function meter._line_usage(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) from public;
-- meter.reconciliation calls it with the analyst's rights (as _period_usage).
grant execute on function meter._line_usage(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) to meter_analyst;
