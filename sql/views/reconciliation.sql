-- meter.reconciliation: every closed period, customer and invoice line (a meter, or a priced filter
-- of its dimension values: price_filter, decision 110), each step's figures side by side, for
-- analysts in psql and `meterctl reconcile`. The "raw" figures are what the rollup folded for the
-- line, counted by its own statements in meter.rollup_ledger (meter._line_ledger; decision 123),
-- rollups its part of the rollups (meter._line_usage, the close's figures): both assign usage to
-- lines by the same rule (meter._dims_priced_by). For a whole billing period (every line of a
-- close) both read the period's rows the rollup keeps beside its hours (rollup_ledger_period,
-- rollup_period, rollup_period_dims; decision 124): one row per line and dimension values, not
-- ~720 hours. No raw event is read: a month of millions of events reconciles in the time of its
-- rollups. That the period rows are Σ of the hours is `meterctl rollup verify`'s (with the hours
-- against raw events). The recomputation of the ledger from raw events is a separate
-- verification, meter.reconciliation_verify(period) (`meterctl reconcile --verify`).
--
--
--   raw_events, raw_quantity   the events folded, net of the cancellations folded (the ledger), plus
--                              those stored and not folded yet (events above the rollup watermark,
--                              cancellations not subtracted yet: normally seconds' worth); the
--                              quantity of a count meter is that count, of a sum meter Σ value in
--                              minus out; max, distinct-count, latest and time-weighted meters show
--                              the rollup's quantity (a maximum or a distinct count is not a sum of
--                              hours: reconciliation_verify recomputes them from events)
--   duplicates_rejected        redeliveries of the period's events acknowledged as duplicates
--   cancelled_events           the period's events whose cancellation was folded (before or after the close)
--   late_after_close           events/cancellations folded after the close (the hour's period was
--                              closed when the rollup folded them), and those not folded yet that
--                              arrived after it
--   rollup_quantity            the rollups now, as the close reads them (meter._line_usage: the
--                              period totals for count and sum meters, the hours otherwise)
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
--                              yet: late arrivals not folded yet, or folded and our invoice plus its
--                              adjustments not at the rollup; rollup differs from raw events: events
--                              not folded yet, or the ledger and the rollup disagree (a fault: run
--                              meter.reconciliation_verify); unsynced hours, dead-letter (", older
--                              than the engine takes" for hours past a Billing Meter's 35 days), engine
--                              usage not fetched (hours went to the engine, but its figure was never
--                              asked: `meterctl reconcile --billing-api-base ...`), engine quantity
--                              differs, acknowledged quantity differs (the engine holds what we invoice
--                              but the outbox says otherwise: a sync defect), engine amount differs,
--                              amount difference)
create or replace view meter.reconciliation as
-- what is stored and not folded yet (meter._unfolded: events above the watermark, +1, and
-- cancellations not subtracted yet, -1; normally seconds' worth): raw figures are the ledger's
-- plus these
with pending as materialized (
    select * from meter._unfolded()
),
lines as (
    select i.id as invoice_id, i.period, i.period_start, i.period_end, i.closed_at, i.customer_id, i.currency, i.plan_id,
           l.meter_id, l.price_filter, l.event_count, l.quantity, l.amount,
           exists (select 1 from meter.plan_prices f
                   where f.plan_id = i.plan_id and f.meter_id = l.meter_id and f.filter <> '{}') as per_filter
    from meter.invoices i join meter.invoice_lines l on l.invoice_id = i.id and l.kind = 'usage'
),
figures as (
    select li.*, c.external_id as customer, m.code as meter, pp.model, pp.unit_amount, pp.package_size, pp.tiers,
           lg.events + pend.n as raw_events,
           -- (the ledger determines the quantity of count and sum meters; for the others the
           -- rollup's figure stands, checked by event counts here and by meter.reconciliation_verify)
           case u.aggregation when 'count' then (lg.events + pend.n)::numeric when 'sum' then lg.value + pend.v
                              else u.quantity end as raw_quantity,
           lg.duplicates as duplicates_rejected, lg.cancelled as cancelled_events,
           u.quantity as rollup_quantity, u.event_count as rollup_events,
           adj.n as adj_events, adj.q as adj_quantity, adj.a as adj_amount,
           lg.late + pend.late as late_after_close, lg.late as late_folded, pend.late as late_pending,
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
    -- what the rollup folded for the line (meter.rollup_ledger, decision 123): no raw event is read
    cross join lateral meter._line_ledger(li.customer_id, pp.meter_id, li.period_start, li.period_end, pp.plan_id, pp.filter) lg
    -- ... and what is stored for it and not folded yet (late: arrived after the close)
    cross join lateral (
        select coalesce(pg_catalog.sum(p.n), 0)::bigint as n, coalesce(pg_catalog.sum(p.v), 0) as v,
               pg_catalog.count(*) filter (where p.arrived_at > li.closed_at) as late
        from pending p
        where p.customer_id = li.customer_id and p.meter_id = pp.meter_id
          and p.occurred_at >= li.period_start and p.occurred_at < li.period_end
          and (not li.per_filter or meter._event_in_line(li.plan_id, li.meter_id, li.price_filter, p.properties, p.occurred_at))
    ) pend
    cross join lateral (
        select coalesce(pg_catalog.sum(a.event_count), 0) as n, coalesce(pg_catalog.sum(a.quantity), 0) as q,
               coalesce(pg_catalog.sum(a.amount), 0) as a
        from meter.invoice_lines a join meter.invoices ai on ai.id = a.invoice_id
        -- (pp's meter and filter, equal to the line's: after the line found its price, as above)
        where a.kind = 'adjustment' and a.adjusts_period = li.period and ai.customer_id = li.customer_id
          and a.meter_id = pp.meter_id and a.price_filter = pp.filter
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
        from (
            -- what was acknowledged for this line: the hour's figure, or, for a meter priced per
            -- filter, the line's own element of it (synced_lines); computed once per hour (the
            -- fence keeps the planner from expanding it into each aggregate above)
            select o.hour, o.state, o.last_error,
                   case when not li.per_filter then o.synced_quantity
                        else (select (x ->> 'quantity')::numeric from pg_catalog.jsonb_array_elements(o.synced_lines) x
                              where x -> 'filter' = li.price_filter) end as q
            from meter.sync_outbox o
            -- (pp.meter_id, the line's meter: read after the line found its price, as above)
            where o.customer_id = li.customer_id and o.meter_id = pp.meter_id
              and o.hour >= li.period_start and o.hour < li.period_end
            offset 0
        ) o
        cross join lateral (select o.q) oq
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
           -- (late events or cancellations not folded yet, or folded and the invoice with its
           -- adjustments not at the rollup yet)
           when f.late_pending > 0
                or (f.late_folded > 0
                    and ((f.quantity + f.adj_quantity) <> f.rollup_quantity or (f.event_count + f.adj_events) <> f.rollup_events))
               then 'MISMATCH: late-after-close not adjusted yet'
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
