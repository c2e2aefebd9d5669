-- meter._hour_lines(customer_id, meter_id, hour): what one outbox hour sends per priced filter,
-- for a meter its customer's plan (in force in the billing period of the hour, in the customer's
-- billing timezone) prices per filter of its dimensions: [{filter, suffix, quantity}], one
-- element per price of the plan for the meter (the default '{}' included, when the plan has one),
-- quantities as text. Null when that plan prices the meter whole (or not at all): the hour is
-- sent as one figure, as before filters.
--
-- Each quantity is the line's part of the hour (meter._line_usage over [hour, hour + 1 h)): Σ
-- events or values; for a max meter the running maximum of the line over the hour's UTC month up
-- to that hour, as the whole meter's (decision 102). Every line is sent, zeros included: a line
-- whose hour fell to 0 (a cancellation) must overwrite what the engine had for it.
create or replace function meter._hour_lines(p_customer_id bigint, p_meter_id bigint, p_hour timestamptz)
returns jsonb
language plpgsql
stable
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
    v_plan bigint;
    v_agg  text;
begin
    select cp.plan_id into v_plan
    from meter.customer_plans cp join meter.customers c on c.id = cp.customer_id
    where cp.customer_id = p_customer_id
      and cp.effective_from <= pg_catalog.to_char(p_hour at time zone c.billing_timezone, 'YYYY-MM')
    order by cp.effective_from desc limit 1;
    if v_plan is null or not exists (select 1 from meter.plan_prices pp
                                     where pp.plan_id = v_plan and pp.meter_id = p_meter_id and pp.filter <> '{}'::jsonb) then
        return null;
    end if;
    select v.aggregation into v_agg from meter.meter_version_ranges v
    where v.meter_id = p_meter_id and p_hour >= v.effective_from and p_hour < v.effective_until;

    return (
        select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                   'filter', pp.filter, 'suffix', meter._line_suffix(pp.filter),
                   'quantity', pg_catalog.trim_scale(u.quantity)::text)
               order by pp.filter)
        from meter.plan_prices pp
        cross join lateral meter._line_usage(
            p_customer_id, p_meter_id,
            case when v_agg = 'max' then pg_catalog.date_trunc('month', p_hour) else p_hour end,
            p_hour + interval '1 hour', v_plan, pp.filter) u
        where pp.plan_id = v_plan and pp.meter_id = p_meter_id);
end;
$$;

comment on function meter._hour_lines(bigint, bigint, timestamptz) is
    'Per priced filter, what an outbox hour sends for a meter its customer''s plan prices per filter; null otherwise.';
revoke all on function meter._hour_lines(bigint, bigint, timestamptz) from public;
