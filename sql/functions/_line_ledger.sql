-- meter._line_ledger(customer_id, meter_id, from, to, plan_id, filter): what the rollup folded for
-- one invoice line, from meter.rollup_ledger (decision 123): the line's hours in [from, to), or the
-- period's rows of meter.rollup_ledger_period when [from, to) is a whole billing period of the
-- customer (decision 124); for a meter the plan prices per filter, the dimension values that
-- `filter` prices (meter._dims_priced_by, as meter._line_usage assigns usage to lines).
--
--   events        events folded net of cancellations (events - cancelled)
--   cancelled     cancellations folded
--   duplicates    redeliveries acknowledged as duplicates
--   late          events and cancellations folded after the close of their period
--   value         Σ value of the events folded net of those cancelled
--   key_checksum  Σ hashtextextended(idempotency_key, 0) of the events folded and not cancelled
--
-- Reads one row per dimension combination (a whole period) or at most the line's hours times
-- them, never raw events: the reconciliation's per-line figures. meter.reconciliation_verify
-- recomputes them from raw events.
create or replace function meter._line_ledger(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_from        timestamptz,
    p_to          timestamptz,
    p_plan_id     bigint,
    p_filter      jsonb)
returns table (events bigint, cancelled bigint, duplicates bigint, late bigint, value numeric, key_checksum numeric)
language sql
stable
-- (exactly one row: the planner's default of 1,000 made the reconciliation look costly enough to JIT-compile, ~1 s)
rows 1
-- (the analyst's reconciliation calls it: it reads the customer's billing timezone, which the
-- analyst may not, to know a whole period; it returns the ledger's figures, which the analyst may read)
security definer
set search_path = pg_catalog, pg_temp
as $$
    -- (whether [from, to) is a whole billing period of the customer, asked once)
    with w as (
        select coalesce(pg_catalog.bool_or(meter._is_billing_period(c.billing_timezone, p_from, p_to)), false) as whole
        from meter.customers c where c.id = p_customer_id
    )
    select coalesce(pg_catalog.sum(g.events - g.cancelled), 0)::bigint, coalesce(pg_catalog.sum(g.cancelled), 0)::bigint,
           coalesce(pg_catalog.sum(g.duplicates), 0)::bigint, coalesce(pg_catalog.sum(g.late), 0)::bigint,
           coalesce(pg_catalog.sum(g.value_in - g.value_out), 0), coalesce(pg_catalog.sum(g.key_checksum), 0)
    from (select l.dims, pg_catalog.sum(l.events) as events, pg_catalog.sum(l.cancelled) as cancelled,
                 pg_catalog.sum(l.duplicates) as duplicates, pg_catalog.sum(l.late) as late,
                 pg_catalog.sum(l.value_in) as value_in, pg_catalog.sum(l.value_out) as value_out,
                 pg_catalog.sum(l.key_checksum) as key_checksum
          -- a whole billing period of the customer (every line of a close, unless its plan changed
          -- within the period): its rows in rollup_ledger_period, one per combination (decision 124)
          from meter.rollup_ledger_period l, w
          where w.whole and l.customer_id = p_customer_id and l.meter_id = p_meter_id and l.period_start = p_from
          group by l.dims
          union all
          -- any other range: its hours
          select l.dims, pg_catalog.sum(l.events), pg_catalog.sum(l.cancelled), pg_catalog.sum(l.duplicates),
                 pg_catalog.sum(l.late), pg_catalog.sum(l.value_in), pg_catalog.sum(l.value_out), pg_catalog.sum(l.key_checksum)
          from meter.rollup_ledger l, w
          where not w.whole and l.customer_id = p_customer_id and l.meter_id = p_meter_id and l.hour >= p_from and l.hour < p_to
          group by l.dims
          -- (a fence: the price is found once per combination, not pushed down to every hour's row)
          offset 0) g
    -- (the whole meter when the plan has no filter for it; else the combinations the line prices)
    where not exists (select 1 from meter.plan_prices pp
                      where pp.plan_id = p_plan_id and pp.meter_id = p_meter_id and pp.filter <> '{}'::jsonb)
       or meter._dims_priced_by(p_plan_id, p_meter_id, g.dims) = p_filter
$$;

comment on function meter._line_ledger(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) is
    'What the rollup folded for an invoice line (meter.rollup_ledger): events, cancellations, duplicates, late, Σ value, key checksum.';
revoke all on function meter._line_ledger(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) from public;
grant execute on function meter._line_ledger(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) to meter_analyst;
