-- meter._alerts_evaluate(customers, meters, hours): fires the alerts and limits reached by what a
-- rollup run changed (meter.rollup_run calls it last, in its transaction, with the hours it
-- changed). For each customer and billing period (in the customer's billing timezone) those hours
-- fall in, with the plan in force then:
--   * alerts of the customer or of its plan: kind quantity -> the meter's period quantity
--     (meter._period_usage) >= threshold; amount -> the period's usage lines (meter._invoice_draft,
--     the close's pricing) total >= threshold (minor units); limit_share -> the meter's quantity
--     >= threshold x the plan's whole-meter limit on it;
--   * limits of the plan: the period's usage under the limit's filter >= the limit (limit.reached).
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
    v_t     record;
    v_a     record;
    v_l     record;
    v_value numeric;
    v_n     integer := 0;
    v_msg   text;
begin
    if not exists (select 1 from meter.alerts) and not exists (select 1 from meter.plan_limits) then
        return 0;
    end if;
    for v_t in
        select distinct k.c as customer_id, c.external_id, p.period, b.period_start, b.period_end, cp.plan_id
        from rows from (pg_catalog.unnest(p_customers), pg_catalog.unnest(p_meters), pg_catalog.unnest(p_hours)) as k(c, m, h)
        join meter.customers c on c.id = k.c
        cross join lateral (select pg_catalog.to_char(k.h at time zone c.billing_timezone, 'YYYY-MM') as period) p
        cross join lateral meter.billing_period(k.c, p.period) b
        cross join lateral (select x.plan_id from meter.customer_plans x
                            where x.customer_id = k.c and x.effective_from <= p.period
                            order by x.effective_from desc limit 1) cp
    loop
        -- alerts
        for v_a in
            select a.* from meter.alerts a
            where (a.customer_id = v_t.customer_id or a.plan_id = v_t.plan_id)
              and not exists (select 1 from meter.alert_firings f
                              where f.alert_id = a.id and f.customer_id = v_t.customer_id and f.period = v_t.period)
        loop
            if v_a.kind = 'amount' then
                select coalesce(pg_catalog.sum(d.amount), 0) into v_value
                from meter._invoice_draft(v_t.customer_id, v_t.plan_id, v_t.period_start, v_t.period_end, false) d
                where d.kind = 'usage';
            else
                select u.quantity into v_value
                from meter._period_usage(v_t.customer_id, v_a.meter_id, v_t.period_start, v_t.period_end) u;
            end if;
            if (v_a.kind <> 'limit_share' and v_value >= v_a.threshold)
               or (v_a.kind = 'limit_share' and exists (
                       select 1 from meter.plan_limits l
                       where l.plan_id = v_t.plan_id and l.meter_id = v_a.meter_id and l.filter = '{}'
                         and v_value >= v_a.threshold * l.quantity)) then
                insert into meter.alert_firings (alert_id, customer_id, period, value)
                values (v_a.id, v_t.customer_id, v_t.period, v_value)
                on conflict do nothing;
                if found then
                    v_msg := meter._webhook_emit('alert.triggered',
                        pg_catalog.format('alert:%s:%s:%s', v_a.id, v_t.customer_id, v_t.period),
                        pg_catalog.jsonb_build_object(
                            'alert_id', v_a.id, 'customer', v_t.external_id, 'period', v_t.period, 'kind', v_a.kind,
                            'meter', (select m.code from meter.meters m where m.id = v_a.meter_id),
                            'threshold', v_a.threshold, 'value', pg_catalog.trim_scale(v_value)));
                    update meter.alert_firings set message_id = v_msg
                    where alert_id = v_a.id and customer_id = v_t.customer_id and period = v_t.period;
                    v_n := v_n + 1;
                end if;
            end if;
        end loop;
        -- limits of the plan
        for v_l in
            select l.*, m.code as meter_code from meter.plan_limits l join meter.meters m on m.id = l.meter_id
            where l.plan_id = v_t.plan_id
              and not exists (select 1 from meter.limit_firings f
                              where f.customer_id = v_t.customer_id and f.plan_id = l.plan_id and f.meter_id = l.meter_id
                                and f.filter = l.filter and f.period = v_t.period)
        loop
            v_value := meter._limit_rolled(v_t.customer_id, v_l.meter_id, v_l.filter, v_t.period_start,
                (select v.aggregation from meter.meter_version_ranges v
                 where v.meter_id = v_l.meter_id and v_t.period_start >= v.effective_from and v_t.period_start < v.effective_until));
            if coalesce(v_value, 0) >= v_l.quantity then
                insert into meter.limit_firings (customer_id, plan_id, meter_id, filter, period, value)
                values (v_t.customer_id, v_l.plan_id, v_l.meter_id, v_l.filter, v_t.period, v_value)
                on conflict do nothing;
                if found then
                    perform meter._webhook_emit('limit.reached',
                        pg_catalog.format('limit:%s:%s:%s:%s:%s', v_t.customer_id, v_l.plan_id, v_l.meter_id, v_l.filter, v_t.period),
                        pg_catalog.jsonb_build_object('customer', v_t.external_id, 'period', v_t.period, 'meter', v_l.meter_code,
                                                      'filter', v_l.filter, 'limit', v_l.quantity, 'used', pg_catalog.trim_scale(v_value)));
                    v_n := v_n + 1;
                end if;
            end if;
        end loop;
    end loop;
    return v_n;
end;
$$;

comment on function meter._alerts_evaluate(bigint[], bigint[], timestamptz[]) is
    'Fires the alerts and limits a rollup run''s changed hours reach: once per customer and period, with its webhook message.';
revoke all on function meter._alerts_evaluate(bigint[], bigint[], timestamptz[]) from public;
