-- meter.reconciliation: every closed period, customer and invoice line (a meter, or a priced filter
-- of its dimension values: price_filter, decision 110), each step's figures side by side, for
-- analysts in psql and `meterctl reconcile`. Raw figures are the line's events (meter._event_in_line),
-- rollups its part of the hourly rollups (meter._line_usage): both assign usage to lines by the
-- same rule (meter._dims_priced_by).
--
--
--   raw_events, raw_quantity   from meter.events, net of cancellations (quantity per aggregation:
--                              count, Σ value, max value, distinct values, the last event's value,
--                              for a time-weighted gauge its integral over the period)
--   duplicates_rejected        redeliveries of the period's events acknowledged as duplicates
--   cancelled_events           the period's events cancelled (before or after the close)
--   late_after_close           events/cancellations that arrived after the close (late_after_close)
--   rollup_quantity            the hourly rollups now (meter._period_usage)
--   synced_quantity            what the billing engine holds for the period, as it reported it before the
--                              close (meter.billing_usage: its meter event summaries, or usage record
--                              summaries on the legacy API; null: not billed there, or not fetched);
--                              compared with our usage line as frozen at close (changes after both
--                              closes are our adjustments, never sent to the engine's closed period)
--   acknowledged_quantity      what the engine answered 2xx to, per the outbox (our side of the sync)
--   engine_usage_fetched_at    when the engine's figure was fetched
--   unsynced_hours, dead_hours the period's hours not yet acknowledged / parked as dead
--   engine_invoice_quantity, engine_invoice_amount   the engine's invoice line(s) for the period (webhooks),
--                              compared with our usage line's amount
--   invoiced_quantity, invoiced_amount               our invoice: the usage line plus later adjustments
--   expected_amount            the rollup quantity priced now (meter.price_amount)
--   difference                 invoiced_amount - expected_amount
--   price_filter, line         the priced filter of the line ('{}': the meter whole or its default) and
--                              the line's name as on the invoice ("ai_tokens [model=gpt-4o]")
--   status                     MATCH, or MISMATCH: <first cause> (late-after-close not adjusted
--                              yet, rollup differs from raw events, unsynced hours, dead-letter (", older
--                              than the engine takes" for hours past a Billing Meter's 35 days), engine
--                              usage not fetched (hours went to the engine, but its figure was never
--                              asked: `meterctl reconcile --billing-api-base ...`), engine quantity
--                              differs, acknowledged quantity differs (the engine holds what we invoice
--                              but the outbox says otherwise: a sync defect), engine amount differs,
--                              amount difference)
create or replace view meter.reconciliation as
with lines as (
    select i.id as invoice_id, i.period, i.period_start, i.period_end, i.closed_at, i.customer_id, i.currency, i.plan_id,
           l.meter_id, l.price_filter, l.event_count, l.quantity, l.amount,
           exists (select 1 from meter.plan_prices f
                   where f.plan_id = i.plan_id and f.meter_id = l.meter_id and f.filter <> '{}') as per_filter
    from meter.invoices i join meter.invoice_lines l on l.invoice_id = i.id and l.kind = 'usage'
),
figures as (
    select li.*, c.external_id as customer, m.code as meter, pp.model, pp.unit_amount, pp.package_size, pp.tiers,
           raw.raw_events, raw.raw_quantity, raw.duplicates_rejected, raw.cancelled_events,
           u.quantity as rollup_quantity, u.event_count as rollup_events,
           adj.n as adj_events, adj.q as adj_quantity, adj.a as adj_amount,
           late.n as late_after_close, late.unadjusted as late_unadjusted,
           sy.acknowledged_quantity, sy.hours as outbox_hours, sy.unsynced_hours, sy.dead_hours, sy.past_engine_window_hours,
           eng.quantity as engine_invoice_quantity, eng.amount as engine_invoice_amount,
           bu.quantity as synced_quantity, bu.fetched_at as engine_usage_fetched_at
    from lines li
    join meter.customers c on c.id = li.customer_id
    join meter.meters m on m.id = li.meter_id
    join meter.plan_prices pp on pp.plan_id = li.plan_id and pp.meter_id = li.meter_id and pp.filter = li.price_filter
    -- (the price's plan and filter, equal to the line's: the figures are computed once the line
    -- has found its price, not once per line and price of its plan, as the planner preferred)
    cross join lateral meter._line_usage(li.customer_id, pp.meter_id, li.period_start, li.period_end, pp.plan_id, pp.filter) u
    cross join lateral (
        select pg_catalog.count(*) as raw_events,
               case u.aggregation
                   when 'count' then pg_catalog.count(*)::numeric
                   when 'sum' then coalesce(pg_catalog.sum(e.value), 0)
                   when 'max' then coalesce(pg_catalog.max(e.value), 0)
                   when 'latest' then coalesce((pg_catalog.array_agg(e.value order by e.occurred_at desc, e.idempotency_key collate "C" desc))[1], 0)
                   -- integrated from raw events, carrying in the value held at the period start
                   when 'time_weighted_sum' then
                       case when not exists (select 1 from meter.meter_versions v
                                             where v.meter_id = li.meter_id and pg_catalog.cardinality(v.dimensions) > 0) then (
                           select coalesce(pg_catalog.sum(g.quantity), 0)
                           from meter._gauge_hours(li.customer_id, li.meter_id, li.period_start, li.period_end) g)
                       else (
                           -- one series per combination of dimension values; the line's combinations
                           select coalesce(pg_catalog.sum(g.quantity), 0)
                           from meter._gauge_dims_hours(li.customer_id, li.meter_id, li.period_start, li.period_end) g
                           where not li.per_filter or meter._dims_priced_by(li.plan_id, li.meter_id, g.dims) = li.price_filter)
                       end
                   when 'unique_count' then pg_catalog.count(distinct e.properties ->> (
                       select v.unique_property from meter.meter_version_ranges v
                       where v.meter_id = li.meter_id and v.effective_from <= li.period_start
                         and v.effective_until > li.period_start))::numeric
               end as raw_quantity,
               (select pg_catalog.count(*) from meter.event_redeliveries r
                join meter.events e2 on e2.id = r.event_id
                where r.verdict = 'duplicate' and e2.customer_id = li.customer_id and e2.meter_id = li.meter_id
                  and e2.occurred_at >= li.period_start and e2.occurred_at < li.period_end
                  and (not li.per_filter or meter._event_in_line(li.plan_id, li.meter_id, li.price_filter, e2.properties, e2.occurred_at))) as duplicates_rejected,
               (select pg_catalog.count(*) from meter.event_cancellations x2
                join meter.events e3 on e3.id = x2.event_id
                where e3.customer_id = li.customer_id and e3.meter_id = li.meter_id
                  and e3.occurred_at >= li.period_start and e3.occurred_at < li.period_end
                  and (not li.per_filter or meter._event_in_line(li.plan_id, li.meter_id, li.price_filter, e3.properties, e3.occurred_at))) as cancelled_events
        from meter.events e
        -- (pp.meter_id, the line's meter: read after the line found its price, as above)
        where e.customer_id = li.customer_id and e.meter_id = pp.meter_id
          and e.occurred_at >= li.period_start and e.occurred_at < li.period_end
          and (not li.per_filter or meter._event_in_line(li.plan_id, li.meter_id, li.price_filter, e.properties, e.occurred_at))
          and not exists (select 1 from meter.event_cancellations x where x.event_id = e.id)
    ) raw
    -- late after close (as meter.late_after_close counts them, computed here per line from the
    -- (customer, meter, occurred_at) index): arrivals after the close, and those no later close of
    -- the customer has seen yet
    cross join lateral (
        select pg_catalog.count(*) as n,
               pg_catalog.count(*) filter (where not exists (
                   select 1 from meter.invoices ai
                   where ai.customer_id = li.customer_id and ai.period_start > li.period_start
                     and ai.closed_at > x.arrived_at)) as unadjusted
        from meter.events e
        cross join lateral (
            select e.received_at as arrived_at where e.received_at > li.closed_at
            union all
            select xc.cancelled_at from meter.event_cancellations xc
            where xc.event_id = e.id and xc.cancelled_at > li.closed_at
        ) x
        where e.customer_id = li.customer_id and e.meter_id = pp.meter_id
          and e.occurred_at >= li.period_start and e.occurred_at < li.period_end
          and (not li.per_filter or meter._event_in_line(li.plan_id, li.meter_id, li.price_filter, e.properties, e.occurred_at))
    ) late
    cross join lateral (
        select coalesce(pg_catalog.sum(a.event_count), 0) as n, coalesce(pg_catalog.sum(a.quantity), 0) as q,
               coalesce(pg_catalog.sum(a.amount), 0) as a
        from meter.invoice_lines a join meter.invoices ai on ai.id = a.invoice_id
        where a.kind = 'adjustment' and a.adjusts_period = li.period and ai.customer_id = li.customer_id
          and a.meter_id = li.meter_id and a.price_filter = li.price_filter
    ) adj
    cross join lateral (
        select case when pg_catalog.count(*) = 0 then null
                    -- (max and latest meters send running values: the period's is the last hour's)
                    when u.aggregation = 'max' then coalesce(pg_catalog.max(oq.q), 0)
                    when u.aggregation = 'latest' then coalesce((pg_catalog.array_agg(oq.q order by o.hour desc)
                                                                filter (where oq.q is not null))[1], 0)
                    else coalesce(pg_catalog.sum(oq.q), 0) end as acknowledged_quantity,
               pg_catalog.count(*) as hours,
               pg_catalog.count(*) filter (where o.state in ('pending', 'in_flight')) as unsynced_hours,
               pg_catalog.count(*) filter (where o.state = 'dead') as dead_hours,
               -- dead because the engine no longer takes them (Billing Meters: 35 days back)
               pg_catalog.count(*) filter (where o.state = 'dead' and o.last_error like '%timestamp_too_far_in_past%')
                   as past_engine_window_hours
        from meter.sync_outbox o
        -- what was acknowledged for this line: the hour's figure, or, for a meter priced per
        -- filter, the line's own element of it (synced_lines)
        cross join lateral (
            select case when not li.per_filter then o.synced_quantity
                        else (select (x ->> 'quantity')::numeric from pg_catalog.jsonb_array_elements(o.synced_lines) x
                              where x -> 'filter' = li.price_filter) end as q
        ) oq
        where o.customer_id = li.customer_id and o.meter_id = li.meter_id
          and o.hour >= li.period_start and o.hour < li.period_end
    ) sy
    cross join lateral (
        select case when pg_catalog.count(*) = 0 then null else pg_catalog.sum(bl.quantity) end as quantity,
               case when pg_catalog.count(*) = 0 then null else pg_catalog.sum(bl.amount) end as amount
        from meter.billing_invoice_lines bl
        where bl.customer_id = li.customer_id and bl.meter_id = li.meter_id
          and coalesce(bl.price_filter, '{}') = li.price_filter
          and bl.period_start < li.period_end and bl.period_end > li.period_start
    ) eng
    left join meter.billing_usage bu
           on bu.customer_id = li.customer_id and bu.meter_id = li.meter_id and bu.period_start = li.period_start
          and bu.price_filter = li.price_filter
)
select f.period, f.customer, f.meter, f.currency, f.invoice_id,
       f.raw_events, pg_catalog.trim_scale(f.raw_quantity) as raw_quantity, f.duplicates_rejected, f.late_after_close,
       pg_catalog.trim_scale(f.rollup_quantity) as rollup_quantity,
       pg_catalog.trim_scale(f.synced_quantity) as synced_quantity, f.unsynced_hours, f.dead_hours,
       pg_catalog.trim_scale(f.engine_invoice_quantity) as engine_invoice_quantity, f.engine_invoice_amount,
       pg_catalog.trim_scale(f.quantity + f.adj_quantity) as invoiced_quantity, f.amount + f.adj_amount as invoiced_amount,
       meter.price_amount(f.model, f.unit_amount, f.package_size, f.tiers, f.rollup_quantity) as expected_amount,
       (f.amount + f.adj_amount)
           - meter.price_amount(f.model, f.unit_amount, f.package_size, f.tiers, f.rollup_quantity) as difference,
       case
           when f.late_unadjusted > 0 then 'MISMATCH: late-after-close not adjusted yet'
           when f.raw_quantity <> f.rollup_quantity or f.raw_events <> f.rollup_events
               then 'MISMATCH: rollup differs from raw events'
           when f.past_engine_window_hours > 0 then 'MISMATCH: dead-letter, older than the engine takes'
           when f.dead_hours > 0 then 'MISMATCH: dead-letter'
           when f.unsynced_hours > 0 then 'MISMATCH: unsynced hours'
           when f.outbox_hours > 0 and f.synced_quantity is null then 'MISMATCH: engine usage not fetched'
           when f.synced_quantity is not null and f.synced_quantity <> f.quantity then 'MISMATCH: engine quantity differs'
           when f.acknowledged_quantity is not null and f.acknowledged_quantity <> f.quantity
               then 'MISMATCH: acknowledged quantity differs'
           when f.engine_invoice_amount is not null and f.engine_invoice_amount <> f.amount
               then 'MISMATCH: engine amount differs'
           when (f.amount + f.adj_amount) <> meter.price_amount(f.model, f.unit_amount, f.package_size, f.tiers, f.rollup_quantity)
                or (f.quantity + f.adj_quantity) <> f.rollup_quantity
               then 'MISMATCH: amount difference'
           else 'MATCH'
       end as status,
       pg_catalog.trim_scale(f.acknowledged_quantity) as acknowledged_quantity, f.engine_usage_fetched_at,
       f.cancelled_events, f.price_filter,
       -- the line's name as on the invoice: the meter, and its priced filter when it has them
       f.meter || meter._filter_label(f.price_filter, f.per_filter) as line
from figures f;

comment on view meter.reconciliation is
    'Per closed period, customer and invoice line (meter, price filter): raw events -> rollups -> synced -> engine invoice -> our invoice, with a status.';
grant select on meter.reconciliation to meter_analyst;
