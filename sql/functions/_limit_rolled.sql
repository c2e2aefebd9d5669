-- meter._limit_rolled(customer_id, meter_id, filter, from, to, aggregation): the rolled-up usage a
-- limit counts over [from, to): for the whole meter ('{}') from rollup_hourly, else the
-- rollup_hourly_dims rows whose values fall under the filter (meter._dims_match); count -> Σ
-- events, sum -> Σ quantity, max -> the largest hourly maximum (0 without events). The one
-- definition of it: meter.limit_check adds what is not rolled up yet; meter._alerts_evaluate fires
-- limit.reached from it.
create or replace function meter._limit_rolled(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_filter      jsonb,
    p_from        timestamptz,
    p_to          timestamptz,
    p_aggregation text)
returns numeric
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_used numeric;
begin
    if p_filter = '{}'::jsonb then
        select case p_aggregation when 'count' then coalesce(pg_catalog.sum(r.event_count), 0)::numeric
                                  when 'sum' then coalesce(pg_catalog.sum(r.quantity), 0)
                                  else coalesce(pg_catalog.max(r.max_value) filter (where r.event_count > 0), 0) end
          into v_used
        from meter.rollup_hourly r
        where r.customer_id = p_customer_id and r.meter_id = p_meter_id and r.hour >= p_from and r.hour < p_to;
    else
        -- (grouped by values first: the filter is matched once per combination, not per hour)
        select case p_aggregation when 'count' then coalesce(pg_catalog.sum(g.n), 0)::numeric
                                  when 'sum' then coalesce(pg_catalog.sum(g.q), 0)
                                  else coalesce(pg_catalog.max(g.mx), 0) end
          into v_used
        from (select x.dims, pg_catalog.sum(x.event_count) as n, pg_catalog.sum(x.quantity) as q,
                     pg_catalog.max(x.max_value) filter (where x.event_count > 0) as mx
              from meter.rollup_hourly_dims x
              where x.customer_id = p_customer_id and x.meter_id = p_meter_id and x.hour >= p_from and x.hour < p_to
              group by x.dims
              offset 0) g  -- (a fence: the planner would push the match below the grouping)
        where meter._dims_match(g.dims, p_filter);
    end if;
    return v_used;
end;
$$;

comment on function meter._limit_rolled(bigint, bigint, jsonb, timestamptz, timestamptz, text) is
    'The rolled-up usage a limit counts (whole meter or under a filter of its dimensions) over a range.';
revoke all on function meter._limit_rolled(bigint, bigint, jsonb, timestamptz, timestamptz, text) from public;
