-- meter._line_figures(customer_ids, meter_ids, froms, tos, plan_ids, filters): the figures of many
-- invoice lines at once, from the hourly rollups, one row per request (i, from 1: its position in
-- the arrays; rows in no particular order): event count, billable quantity and the meter's
-- aggregation.
-- Request i is the part of meter_ids[i]'s usage by customer_ids[i] in [froms[i], tos[i]) that plan
-- plan_ids[i] prices with filters[i] (plan NULL or a plan without filters on the meter: the whole
-- meter). The one implementation of a line's figures: the close computes all its lines with one
-- call; meter._line_usage, meter._line_hash and meter._period_usage are this for one request.
--
-- Quantity, from the rollups:
--   * a meter the plan prices without filters, over exactly one billing period of the customer
--     (every usage line of a close or a preview), never a time-weighted gauge in any of its
--     versions (the rollup keeps no totals for those): count and sum from that period's totals
--     (meter.rollup_period, kept by the rollup in its own transaction; rollup verify checks them
--     against the hours); otherwise from the hourly rows: count -> Σ events, sum and time_weighted_sum -> Σ
--     quantity, max -> the largest hourly maximum among hours with events (0 without), latest ->
--     the last value (by time, then key), unique_count -> distinct values over the whole range
--     (meter.rollup_hourly_unique), not a sum of hours;
--   * a meter priced per filter of its dimensions: the hourly rows per dimension values
--     (meter.rollup_hourly_dims; hours under a meter version without dimensions count under no
--     values, '{}') grouped by values first, each combination assigned to one price
--     (meter._dims_priced_by), then count / sum / time_weighted_sum / max as above over the
--     combinations this filter prices; for count and sum over exactly one billing period, never a
--     gauge and under versions that all have dimensions, the period's rows per combination
--     (meter.rollup_period_dims, kept as rollup_period is) instead of its hours (decision 124).
--     meter.plan_price_set admits filters on these four only.
--
-- Refusals, for the first request at fault (in request order): its meter changes aggregation
-- within its range (55000: start new meter versions at a period start); its plan prices it per
-- filter but its aggregation is not one of the four (0A000).
create or replace function meter._line_figures(
    p_customer_ids bigint[],
    p_meter_ids    bigint[],
    p_from         timestamptz[],
    p_to           timestamptz[],
    p_plan_ids     bigint[],
    p_filters      jsonb[])
returns table (i integer, event_count bigint, quantity numeric, aggregation text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
set jit = off  -- large cost estimates over arrays made JIT compile for ~1 s per call (decision 120)
set plan_cache_mode = force_generic_plan  -- one plan per statement, kept: a line at a time (the reconciliation) replanned every call
as $$
#variable_conflict use_column
declare
    -- Per request, by position: its meter's aggregations over its range (exactly one, or none
    -- when no version covers it) and whether its plan prices the meter per filter.
    v_aggs    text[];
    v_kinds   text[];   -- 'period', 'hours', 'latest', 'unique', 'filtered_period', 'filtered': which statement figures it
    v_bad     jsonb;    -- the first request at fault
begin
    -- Each request's aggregation and the statement below that figures it (its kind), in one pass
    -- over the requests; the refusals, for the first request at fault, before any figure.
    select pg_catalog.array_agg(k.aggs[1] order by k.i),
           pg_catalog.array_agg(case when k.has_filters
                                          -- a whole period of count or sum under versions that all
                                          -- have dimensions: its rows per combination
                                          -- (meter.rollup_period_dims; decision 124)
                                          then case when k.aggs[1] in ('count', 'sum') and not k.ever_gauge
                                                         and not k.some_undimensioned
                                                         and meter._is_billing_period(k.tz, k.r_from, k.r_to)
                                                    then 'filtered_period' else 'filtered' end
                                     when k.aggs[1] = 'latest' then 'latest'
                                     when k.aggs[1] = 'unique_count' then 'unique'
                                     -- exactly one billing period of the customer: its totals
                                     -- (rollup_run keeps none for a meter with a time-weighted
                                     -- version, whatever the period: the same rule here, though
                                     -- meter_upsert lets no meter change to or from a gauge)
                                     -- (count and sum only: a period's max is kept with greatest(),
                                     -- which on a tie of 5.0 and 5.00 may keep the other scale than
                                     -- max() over the hours did, and the invoice stores the number)
                                     when k.aggs[1] in ('count', 'sum') and not k.ever_gauge
                                          and meter._is_billing_period(k.tz, k.r_from, k.r_to)
                                         then 'period'
                                     else 'hours' end order by k.i),
           (pg_catalog.array_agg(pg_catalog.jsonb_build_object('meter_id', k.meter_id, 'r_from', k.r_from, 'r_to', k.r_to,
                                                               'aggs', k.aggs) order by k.i)
                filter (where pg_catalog.cardinality(k.aggs) <> 1
                           or (k.has_filters and k.aggs[1] not in ('count', 'sum', 'max', 'time_weighted_sum'))))[1]
      into v_aggs, v_kinds, v_bad
    from (select q.i, q.meter_id, q.r_from, q.r_to, c.billing_timezone as tz, r.aggs, r.ever_gauge, r.some_undimensioned,
                 exists (select 1 from meter.plan_prices pp
                         where pp.plan_id = q.plan_id and pp.meter_id = q.meter_id and pp.filter <> '{}'::jsonb) as has_filters
          from rows from (pg_catalog.unnest(p_customer_ids), pg_catalog.unnest(p_meter_ids), pg_catalog.unnest(p_from),
                          pg_catalog.unnest(p_to), pg_catalog.unnest(p_plan_ids))
               with ordinality as q(customer_id, meter_id, r_from, r_to, plan_id, i)
          left join meter.customers c on c.id = q.customer_id
          -- the aggregations once per distinct meter and range (a close: thousands of requests,
          -- a handful of ranges)
          join (select d.meter_id, d.r_from, d.r_to,
                       (select pg_catalog.array_agg(distinct v.aggregation) from meter.meter_version_ranges v
                        where v.meter_id = d.meter_id and v.effective_from < d.r_to and v.effective_until > d.r_from) as aggs,
                       exists (select 1 from meter.meter_versions v
                               where v.meter_id = d.meter_id and v.aggregation = 'time_weighted_sum') as ever_gauge,
                       exists (select 1 from meter.meter_version_ranges v
                               where v.meter_id = d.meter_id and v.effective_from < d.r_to and v.effective_until > d.r_from
                                 and pg_catalog.cardinality(v.dimensions) = 0) as some_undimensioned
                from (select distinct x.meter_id, x.r_from, x.r_to
                      from rows from (pg_catalog.unnest(p_meter_ids), pg_catalog.unnest(p_from), pg_catalog.unnest(p_to))
                           as x(meter_id, r_from, r_to)) as d
                offset 0) as r
            on r.meter_id = q.meter_id and r.r_from = q.r_from and r.r_to = q.r_to
          offset 0) as k;  -- (fences: each subquery evaluated once per row, not once per use)
    if v_bad is not null then
        if pg_catalog.jsonb_array_length(v_bad -> 'aggs') <> 1 then
            raise exception 'meter % changes aggregation within [%, %): %', v_bad ->> 'meter_id',
                (v_bad ->> 'r_from')::timestamptz, (v_bad ->> 'r_to')::timestamptz,
                (select pg_catalog.array_agg(a order by a) from pg_catalog.jsonb_array_elements_text(v_bad -> 'aggs') a)
                using errcode = '55000', hint = 'start new meter versions at a period start';
        end if;
        raise exception 'meter % (%) has prices per filter, which only count, sum, max and time_weighted_sum meters can have',
            v_bad ->> 'meter_id', v_bad -> 'aggs' ->> 0 using errcode = '0A000';
    end if;

    -- Counted or summed over exactly one billing period of the customer (a close's, a preview's
    -- lines): that period's totals, kept by the rollup in its own transaction (meter.rollup_period:
    -- Σ events, Σ value; meter.rollup_period_verify checks them against the hours). One row where
    -- the hours were up to 744.
    if 'period' = any (v_kinds) then
        return query
        select q.i::integer, coalesce(p.event_count, 0),
               case q.agg
                   when 'count' then coalesce(p.event_count, 0)::numeric
                   when 'sum' then coalesce(p.quantity, 0)
               end,
               q.agg
        from rows from (pg_catalog.unnest(p_customer_ids), pg_catalog.unnest(p_meter_ids), pg_catalog.unnest(p_from),
                        pg_catalog.unnest(v_aggs), pg_catalog.unnest(v_kinds))
             with ordinality as q(customer_id, meter_id, r_from, agg, kind, i)
        left join meter.rollup_period p
               on p.customer_id = q.customer_id and p.meter_id = q.meter_id and p.period_start = q.r_from
        where q.kind = 'period';
    end if;

    -- Any other range, and time-weighted gauges (not in the period totals): the hourly rows. A
    -- request whose range no meter version covers gets no aggregation and no quantity.
    if 'hours' = any (v_kinds) then
        return query
        select q.i::integer, coalesce(pg_catalog.sum(r.event_count), 0)::bigint,
               case q.agg
                   when 'count' then coalesce(pg_catalog.sum(r.event_count), 0)::numeric
                   when 'sum' then coalesce(pg_catalog.sum(r.quantity), 0)
                   when 'time_weighted_sum' then coalesce(pg_catalog.sum(r.quantity), 0)
                   when 'max' then coalesce(pg_catalog.max(r.max_value) filter (where r.event_count > 0), 0)
               end,
               q.agg
        from rows from (pg_catalog.unnest(p_customer_ids), pg_catalog.unnest(p_meter_ids), pg_catalog.unnest(p_from),
                        pg_catalog.unnest(p_to), pg_catalog.unnest(v_aggs), pg_catalog.unnest(v_kinds))
             with ordinality as q(customer_id, meter_id, r_from, r_to, agg, kind, i)
        left join meter.rollup_hourly r
               on r.customer_id = q.customer_id and r.meter_id = q.meter_id and r.hour >= q.r_from and r.hour < q.r_to
        where q.kind = 'hours'
        group by q.i, q.agg;
    end if;

    -- latest: the last value of the range (by time, then key; 0 without events).
    if 'latest' = any (v_kinds) then
        return query
        select q.i::integer, coalesce(pg_catalog.sum(r.event_count), 0)::bigint,
               coalesce((pg_catalog.array_agg(r.latest_value order by r.latest_at desc, r.latest_key collate "C" desc)
                         filter (where r.latest_at is not null))[1], 0),
               q.agg
        from rows from (pg_catalog.unnest(p_customer_ids), pg_catalog.unnest(p_meter_ids), pg_catalog.unnest(p_from),
                        pg_catalog.unnest(p_to), pg_catalog.unnest(v_aggs), pg_catalog.unnest(v_kinds))
             with ordinality as q(customer_id, meter_id, r_from, r_to, agg, kind, i)
        left join meter.rollup_hourly r
               on r.customer_id = q.customer_id and r.meter_id = q.meter_id and r.hour >= q.r_from and r.hour < q.r_to
        where q.kind = 'latest'
        group by q.i, q.agg;
    end if;

    -- unique_count: distinct values over the whole range (meter.rollup_hourly_unique), not a sum
    -- of hours; the event count from the hourly rows.
    if 'unique' = any (v_kinds) then
        return query
        select q.i::integer,
               (select coalesce(pg_catalog.sum(r.event_count), 0)::bigint from meter.rollup_hourly r
                where r.customer_id = q.customer_id and r.meter_id = q.meter_id and r.hour >= q.r_from and r.hour < q.r_to),
               (select pg_catalog.count(distinct u.value_hash)::numeric from meter.rollup_hourly_unique u
                where u.customer_id = q.customer_id and u.meter_id = q.meter_id and u.hour >= q.r_from and u.hour < q.r_to
                  and u.event_count > 0),
               q.agg
        from rows from (pg_catalog.unnest(p_customer_ids), pg_catalog.unnest(p_meter_ids), pg_catalog.unnest(p_from),
                        pg_catalog.unnest(p_to), pg_catalog.unnest(v_aggs), pg_catalog.unnest(v_kinds))
             with ordinality as q(customer_id, meter_id, r_from, r_to, agg, kind, i)
        where q.kind = 'unique';
    end if;

    -- Meters priced per filter: per combination of dimension values first (hours under a meter
    -- version without dimensions count under no values, '{}'), each combination assigned to one
    -- price, then the combinations this request's filter prices.
    if 'filtered_period' = any (v_kinds) then
        return query
        with q as materialized (
            select q.*
            from rows from (pg_catalog.unnest(p_customer_ids), pg_catalog.unnest(p_meter_ids), pg_catalog.unnest(p_from),
                            pg_catalog.unnest(p_plan_ids), pg_catalog.unnest(p_filters),
                            pg_catalog.unnest(v_aggs), pg_catalog.unnest(v_kinds))
                 with ordinality as q(customer_id, meter_id, r_from, plan_id, filter, agg, kind, i)
            where q.kind = 'filtered_period'
        ),
        combos as (
            select q.i, p.dims, p.event_count as n, p.quantity as qty
            from q
            join meter.rollup_period_dims p
              on p.customer_id = q.customer_id and p.meter_id = q.meter_id and p.period_start = q.r_from
            -- (a fence: the price is found once per combination, after the join)
            offset 0
        )
        select q.i::integer, coalesce(pg_catalog.sum(g.n), 0)::bigint,
               case q.agg
                   when 'count' then coalesce(pg_catalog.sum(g.n), 0)::numeric
                   when 'sum' then coalesce(pg_catalog.sum(g.qty), 0)
               end,
               q.agg
        from q
        left join combos g on g.i = q.i and meter._dims_priced_by(q.plan_id, q.meter_id, g.dims) = q.filter
        group by q.i, q.agg;
    end if;

    if 'filtered' = any (v_kinds) then
        return query
        with q as materialized (
            select q.*
            from rows from (pg_catalog.unnest(p_customer_ids), pg_catalog.unnest(p_meter_ids), pg_catalog.unnest(p_from),
                            pg_catalog.unnest(p_to), pg_catalog.unnest(p_plan_ids), pg_catalog.unnest(p_filters),
                            pg_catalog.unnest(v_aggs), pg_catalog.unnest(v_kinds))
                 with ordinality as q(customer_id, meter_id, r_from, r_to, plan_id, filter, agg, kind, i)
            where q.kind = 'filtered'
        ),
        combos as (
            select q.i, x.dims, pg_catalog.sum(x.event_count) as n, pg_catalog.sum(x.quantity) as qty,
                   pg_catalog.max(x.max_value) filter (where x.event_count > 0) as mx
            from q
            cross join lateral (
                select d.dims, d.event_count, d.quantity, d.max_value
                from meter.rollup_hourly_dims d
                where d.customer_id = q.customer_id and d.meter_id = q.meter_id and d.hour >= q.r_from and d.hour < q.r_to
                union all
                select '{}'::jsonb, r.event_count, r.quantity, r.max_value
                from meter.rollup_hourly r
                join meter.meter_version_ranges v
                  on v.meter_id = r.meter_id and r.hour >= v.effective_from and r.hour < v.effective_until
                where r.customer_id = q.customer_id and r.meter_id = q.meter_id and r.hour >= q.r_from and r.hour < q.r_to
                  and pg_catalog.cardinality(v.dimensions) = 0
            ) as x
            group by q.i, x.dims
        )
        select q.i::integer, coalesce(pg_catalog.sum(g.n), 0)::bigint,
               case q.agg
                   when 'count' then coalesce(pg_catalog.sum(g.n), 0)::numeric
                   when 'sum' then coalesce(pg_catalog.sum(g.qty), 0)
                   when 'time_weighted_sum' then coalesce(pg_catalog.sum(g.qty), 0)
                   when 'max' then coalesce(pg_catalog.max(g.mx), 0)
               end,
               q.agg
        from q
        left join combos g on g.i = q.i and meter._dims_priced_by(q.plan_id, q.meter_id, g.dims) = q.filter
        group by q.i, q.agg;
    end if;
end;
$$;

comment on function meter._line_figures(bigint[], bigint[], timestamptz[], timestamptz[], bigint[], jsonb[]) is
    'Event count, quantity and aggregation of many invoice lines in one call, from the rollups (one row per request): the one implementation of a line''s figures.';
revoke all on function meter._line_figures(bigint[], bigint[], timestamptz[], timestamptz[], bigint[], jsonb[]) from public;
