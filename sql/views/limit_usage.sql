-- meter.limit_usage: the rolled-up usage each plan limit counts, per customer and billing period,
-- from the period totals the rollup keeps (meter.rollup_period; under a filter of dimensions the
-- meter.rollup_period_dims rows whose values fall under it, meter._dims_match). The one definition
-- of it: meter.limit_check adds what is not rolled up yet; meter._alerts_evaluate fires
-- limit.reached from it; analysts read it in psql.
--
--   customer_id, plan_id, meter_id, filter   the limit ('{}': the whole meter) and a customer with
--                                             usage on the meter (any plan's limits: join the
--                                             customer's plan of the period to keep its own)
--   period_start                              the customer's billing period (meter._period_of)
--   limit_quantity, used                      used as the meter aggregates in that period (the
--                                             version in force at its start): count -> events,
--                                             sum -> Σ values, max -> the largest value
--   aggregation
--
-- A view, not a function: a query that names a customer, a plan and a period (or joins them
-- LATERAL) has those conditions pushed down to the period totals' keys, and a statement kept by
-- PL/pgSQL keeps its plan (a SQL function's body would be planned again at every call).
create or replace view meter.limit_usage as
select u.customer_id, u.plan_id, u.meter_id, u.filter, u.period_start, u.limit_quantity,
       case v.aggregation when 'count' then u.event_count::numeric
                          when 'sum' then u.quantity
                          else coalesce(u.max_value, 0) end as used,
       v.aggregation
from (
    select r.customer_id, l.plan_id, l.meter_id, l.filter, r.period_start, l.quantity as limit_quantity,
           r.event_count, r.quantity, r.max_value
    from meter.plan_limits l
    join meter.rollup_period r on r.meter_id = l.meter_id
    where l.filter = '{}'
    union all
    select x.customer_id, l.plan_id, l.meter_id, l.filter, x.period_start, l.quantity,
           pg_catalog.sum(x.event_count)::bigint, pg_catalog.sum(x.quantity), pg_catalog.max(x.max_value)
    from meter.plan_limits l
    join meter.rollup_period_dims x on x.meter_id = l.meter_id
    where l.filter <> '{}' and meter._dims_match(x.dims, l.filter)
    group by x.customer_id, l.plan_id, l.meter_id, l.filter, x.period_start, l.quantity
) u
cross join lateral (select mv.aggregation from meter.meter_versions mv
                    where mv.meter_id = u.meter_id and mv.effective_from <= u.period_start
                    order by mv.effective_from desc limit 1) v;

comment on view meter.limit_usage is
    'Rolled-up usage per plan limit, customer and billing period, from the period totals (what limit checks and limit.reached read).';

grant select on meter.limit_usage to meter_analyst;
