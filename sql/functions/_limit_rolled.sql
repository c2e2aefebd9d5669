-- meter._limit_rolled(customer_id, meter_id, filter, period_start, aggregation): the rolled-up usage
-- a limit counts in the billing period starting at period_start, from the period totals the rollup
-- keeps (meter.rollup_period for the whole meter, '{}'; else the meter.rollup_period_dims rows
-- whose values fall under the filter, meter._dims_match): count -> Σ events, sum -> Σ quantity,
-- max -> the largest value (0 without events). One row, or a few per combination of values, where
-- the hourly rows were a month of them. The one definition of it: meter.limit_check adds what is
-- not rolled up yet; meter._alerts_evaluate fires limit.reached from it.
create or replace function meter._limit_rolled(
    p_customer_id  bigint,
    p_meter_id     bigint,
    p_filter       jsonb,
    p_period_start timestamptz,
    p_aggregation  text)
returns numeric
language plpgsql
stable
set search_path = pg_catalog, pg_temp
-- (PL/pgSQL, not SQL: its statements' plans are kept for the session, where a SQL function's body
-- is planned again in every statement that calls it; the limit check calls it on every request)
as $$
declare
    v_n  bigint;
    v_q  numeric;
    v_mx numeric;
begin
    if p_filter = '{}'::jsonb then
        select r.event_count, r.quantity, r.max_value into v_n, v_q, v_mx
        from meter.rollup_period r
        where r.customer_id = p_customer_id and r.meter_id = p_meter_id and r.period_start = p_period_start;
    else
        select pg_catalog.sum(x.event_count), pg_catalog.sum(x.quantity), pg_catalog.max(x.max_value)
          into v_n, v_q, v_mx
        from meter.rollup_period_dims x
        where x.customer_id = p_customer_id and x.meter_id = p_meter_id and x.period_start = p_period_start
          and meter._dims_match(x.dims, p_filter);
    end if;
    return case p_aggregation when 'count' then coalesce(v_n, 0)::numeric
                              when 'sum' then coalesce(v_q, 0)
                              else coalesce(v_mx, 0) end;
end;
$$;

comment on function meter._limit_rolled(bigint, bigint, jsonb, timestamptz, text) is
    'The rolled-up usage a limit counts (whole meter or under a filter of its dimensions) in a billing period, from the period totals.';
revoke all on function meter._limit_rolled(bigint, bigint, jsonb, timestamptz, text) from public;
