-- meter._alerts_evaluate(customers, meters, hours): fires the alerts and limits reached by what a
-- rollup run changed (meter.rollup_run calls it last, in its transaction, with the hours it
-- changed). For each customer and billing period (in the customer's billing timezone) those hours
-- fall in, with the plan in force then:
--   * alerts of the customer or of its plan: kind quantity -> the meter's period quantity
--     (meter._period_usage) >= threshold; amount -> the period's usage lines (meter._invoice_draft,
--     the close's pricing) total >= threshold (minor units); limit_share -> the meter's quantity
--     >= threshold x the plan's whole-meter limit on it;
--   * limits of the plan: the period's usage under the limit's filter (meter.limit_usage) >= the
--     limit (limit.reached).
-- Each fires at most once per customer and period (the firings' keys): when the rollup first
-- reaches it, whatever happens after (a cancellation that drops below and a later event that
-- crosses again fire nothing more; a late event reaching it for a closed period fires for that
-- period). The message (alert.triggered, limit.reached) is written with the firing, in the same
-- transaction. Returns how many fired. Does nothing (one query) when no alert or limit exists.
create or replace function meter._alerts_evaluate(p_customers bigint[], p_meters bigint[], p_hours timestamptz[])
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
    v_customers    bigint[];
    v_external_ids text[];
    v_periods      text[];
    v_starts       timestamptz[];
    v_ends         timestamptz[];
    v_plans        bigint[];
    v_a     record;
    v_l     record;
    v_value numeric;
    v_n     integer := 0;
    v_msg   text;
begin
    if not exists (select 1 from meter.alerts) and not exists (select 1 from meter.plan_limits) then
        return 0;
    end if;
    -- The customers and billing periods the changed hours fall in, with the plan in force then
    -- (the period's bounds as meter._period_of computes them, which never refuses a timezone:
    -- the rollup must not fail on a customer's timezone, the close refuses it), kept as arrays
    -- for the two loops below (each picks only what has not fired yet).
    select pg_catalog.array_agg(t.customer_id), pg_catalog.array_agg(t.external_id),
           pg_catalog.array_agg(pg_catalog.to_char(t.period_start at time zone t.tz, 'YYYY-MM')),
           pg_catalog.array_agg(t.period_start),
           pg_catalog.array_agg(((t.period_start at time zone t.tz) + interval '1 month') at time zone t.tz),
           pg_catalog.array_agg(cp.plan_id)
      into v_customers, v_external_ids, v_periods, v_starts, v_ends, v_plans
    from (select distinct k.c as customer_id, c.external_id, c.billing_timezone as tz,
                 meter._period_of(c.billing_timezone, k.h) as period_start
          from rows from (pg_catalog.unnest(p_customers), pg_catalog.unnest(p_meters), pg_catalog.unnest(p_hours)) as k(c, m, h)
          join meter.customers c on c.id = k.c) t
    cross join lateral (select x.plan_id from meter.customer_plans x
                        where x.customer_id = t.customer_id
                          and x.effective_from <= pg_catalog.to_char(t.period_start at time zone t.tz, 'YYYY-MM')
                        order by x.effective_from desc limit 1) cp;
    if v_customers is null then
        return 0;
    end if;

    -- alerts of the customer or of its plan, not fired yet in the period
    for v_a in
        select a.id, a.kind, a.meter_id, a.threshold, t.customer_id, t.external_id, t.period, t.period_start, t.period_end,
               t.plan_id as customer_plan_id
        from rows from (pg_catalog.unnest(v_customers), pg_catalog.unnest(v_external_ids), pg_catalog.unnest(v_periods),
                       pg_catalog.unnest(v_starts), pg_catalog.unnest(v_ends), pg_catalog.unnest(v_plans))
               as t(customer_id, external_id, period, period_start, period_end, plan_id)
        join meter.alerts a on a.customer_id = t.customer_id or a.plan_id = t.plan_id
        where not exists (select 1 from meter.alert_firings f
                          where f.alert_id = a.id and f.customer_id = t.customer_id and f.period = t.period)
    loop
        if v_a.kind = 'amount' then
            select coalesce(pg_catalog.sum(d.amount), 0) into v_value
            from meter._invoice_draft(v_a.customer_id, v_a.customer_plan_id, v_a.period_start, v_a.period_end, false) d
            where d.kind = 'usage';
        else
            select u.quantity into v_value
            from meter._period_usage(v_a.customer_id, v_a.meter_id, v_a.period_start, v_a.period_end) u;
        end if;
        if (v_a.kind <> 'limit_share' and v_value >= v_a.threshold)
           or (v_a.kind = 'limit_share' and exists (
                   select 1 from meter.plan_limits l
                   where l.plan_id = v_a.customer_plan_id and l.meter_id = v_a.meter_id and l.filter = '{}'
                     and v_value >= v_a.threshold * l.quantity)) then
            insert into meter.alert_firings (alert_id, customer_id, period, value)
            values (v_a.id, v_a.customer_id, v_a.period, v_value)
            on conflict do nothing;
            if found then
                v_msg := meter._webhook_emit('alert.triggered',
                    pg_catalog.format('alert:%s:%s:%s', v_a.id, v_a.customer_id, v_a.period),
                    pg_catalog.jsonb_build_object(
                        'alert_id', v_a.id, 'customer', v_a.external_id, 'period', v_a.period, 'kind', v_a.kind,
                        'meter', (select m.code from meter.meters m where m.id = v_a.meter_id),
                        'threshold', v_a.threshold, 'value', pg_catalog.trim_scale(v_value)));
                update meter.alert_firings set message_id = v_msg
                where alert_id = v_a.id and customer_id = v_a.customer_id and period = v_a.period;
                v_n := v_n + 1;
            end if;
        end if;
    end loop;

    -- limits of the plan, not fired yet in the period, that the period's usage reaches
    -- (meter.limit_usage: the rollup's period totals), those reached first (few), then matched
    -- to the customers' plans and periods
    for v_l in
        select t.customer_id, t.external_id, t.period, u.plan_id, u.meter_id, u.filter, u.limit_quantity as quantity,
               m.code as meter_code, u.used
        from (select x.* from meter.limit_usage x
              where x.customer_id = any (v_customers) and x.period_start = any (v_starts)
                and x.used >= x.limit_quantity
              offset 0) u
        join rows from (pg_catalog.unnest(v_customers), pg_catalog.unnest(v_external_ids), pg_catalog.unnest(v_periods),
                        pg_catalog.unnest(v_starts), pg_catalog.unnest(v_ends), pg_catalog.unnest(v_plans))
               as t(customer_id, external_id, period, period_start, period_end, plan_id)
          on t.customer_id = u.customer_id and t.period_start = u.period_start and t.plan_id = u.plan_id
        join meter.meters m on m.id = u.meter_id
        where not exists (select 1 from meter.limit_firings f
                          where f.customer_id = t.customer_id and f.plan_id = u.plan_id and f.meter_id = u.meter_id
                            and f.filter = u.filter and f.period = t.period)
    loop
        insert into meter.limit_firings (customer_id, plan_id, meter_id, filter, period, value)
        values (v_l.customer_id, v_l.plan_id, v_l.meter_id, v_l.filter, v_l.period, v_l.used)
        on conflict do nothing;
        if found then
            perform meter._webhook_emit('limit.reached',
                pg_catalog.format('limit:%s:%s:%s:%s:%s', v_l.customer_id, v_l.plan_id, v_l.meter_id, v_l.filter, v_l.period),
                pg_catalog.jsonb_build_object('customer', v_l.external_id, 'period', v_l.period, 'meter', v_l.meter_code,
                                              'filter', v_l.filter, 'limit', v_l.quantity, 'used', pg_catalog.trim_scale(v_l.used)));
            v_n := v_n + 1;
        end if;
    end loop;
    return v_n;
end;
$$;

comment on function meter._alerts_evaluate(bigint[], bigint[], timestamptz[]) is
    'Fires the alerts and limits a rollup run''s changed hours reach: once per customer and period, with its webhook message.';
revoke all on function meter._alerts_evaluate(bigint[], bigint[], timestamptz[]) from public;
