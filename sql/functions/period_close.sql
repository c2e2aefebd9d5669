-- meter.period_close(period, customer, grace, customers): close a billing period ('YYYY-MM') into
-- invoices. `select * from meter.period_close('2026-10');` closes every customer; with a
-- customer's external id, that customer only; with `customers` (external ids), those (what
-- `meterctl close` passes, a batch per transaction). One row per customer, in customer id order:
-- closed, already_closed or no_plan. An unknown customer, or both `customer` and `customers`
-- given: 22023.
--
-- Refusals (nothing is written, SQLSTATE 55000, the message says what to wait for):
--   * the period (in the customer's billing timezone, meter.billing_period) has not ended `grace`
--     ago (default 1 hour: late deliveries of the period's last minutes get that long);
--   * an event of the period is not rolled up yet, or a cancellation of one is not subtracted yet
--     (run `meterctl rollup run`): the invoice is computed from rollups, which must be complete.
--
-- For each customer with a plan in force at the period's start and no invoice for it yet, the
-- lines of meter._invoice_drafts (the pricing meter.invoice_preview shows beforehand):
--   * one 'usage' line per price of the plan: per meter, or per priced filter of a meter's
--     dimension values and its default (decision 110): event count and quantity from the rollups
--     (meter._line_figures), amount by meter.price_amount (the one rounding rule), and the SHA-256
--     of the events that make the line;
--   * one 'adjustment' line per earlier closed period and line whose figures changed since they
--     were invoiced (events or cancellations that arrived after that close): the difference in
--     events, quantity and amount (amount re-priced with that period's plan, minus everything
--     already invoiced for it, adjustments included). Nothing is ever dropped or re-invoiced.
-- Set-based (decision 120): one statement per step for every customer of the call (the batch in
-- a temporary table, dropped at commit), where it was a loop of a dozen statements per customer;
-- the invoices are the same to the byte (the tests that close periods compare them with the
-- former per-customer pricing, Tests/sql/support/close_reference.sql). When several customers
-- are at fault, the refusal names the first in id order, as before; when one customer's period
-- cannot be priced (a meter changing aggregation mid-period, 55000), that refusal now comes
-- after the other customers' checks.
-- The invoice row is the period's freeze: the unique (customer, period_start) key makes a second
-- close (or a concurrent one) create nothing, and triggers refuse any later change.
create or replace function meter.period_close(
    p_period   text,
    p_customer text default null,
    p_grace    interval default '1 hour',
    p_customers text[] default null)
returns table (customer text, period text, invoice_id bigint, outcome text, lines integer, total bigint, currency text)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set jit = off  -- large cost estimates over arrays made JIT compile for ~1 s per call (decision 120)
set timezone = 'UTC'
as $$
#variable_conflict use_column
declare
    v_bad      record;
    v_unknown  text;
    -- The customers this call covers, in id order, with their plan in force at the period's
    -- start, their billing period and their invoice for it (if closed already).
    v_keys     text[];    -- their announcements (invoice.closed): occurrence keys and payloads
    v_payloads jsonb[];
begin
    if p_period is null or p_period !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' then
        raise exception 'period must be YYYY-MM, got %', coalesce(p_period, 'null') using errcode = '22023';
    end if;
    if p_grace is null or p_grace < interval '0' then
        raise exception 'grace must be a non-negative interval' using errcode = '22023';
    end if;
    if p_customer is not null and p_customers is not null then
        raise exception 'give customer or customers, not both' using errcode = '22023';
    end if;
    if p_customer is not null and not exists (select 1 from meter.customers where external_id = p_customer) then
        raise exception 'unknown customer %', p_customer using errcode = '22023';
    end if;
    select x.c into v_unknown from pg_catalog.unnest(p_customers) with ordinality as x(c, n)
    where not exists (select 1 from meter.customers cu where cu.external_id = x.c)
    order by x.n limit 1;
    if found then
        raise exception 'unknown customer %', coalesce(v_unknown, 'null') using errcode = '22023';
    end if;
    -- One close at a time (a second caller waits, then finds the invoices made).
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.close'));
    -- And no rollup run meanwhile (meter.rollup_run's lock; a run under way finishes first): the
    -- rollups, the watermark and the events they hold stay as this close reads them, so a line's
    -- quantity and its events_hash describe the same events (meter._line_figures).
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));

    -- Set-based (decision 120): each step below is one statement for every customer of the call.
    -- Step 1: the customers with a plan in force at the period's start, their billing period (the
    -- calendar month in their billing timezone: meter.billing_period's rule, written out here so
    -- that it is not a function call per customer) and their invoice for it, if any (with its
    -- total and number of lines). Step 3 fills in the invoices it makes; steps 4 and 5 read it.
    create temp table if not exists pg_temp.period_close_batch (
        customer_id bigint, external_id text, timezone text, plan_id bigint, currency text,
        p_start timestamptz, p_end timestamptz, invoice_id bigint, invoice_total bigint, lines integer,
        made boolean)
        on commit drop;
    truncate pg_temp.period_close_batch;
    insert into pg_temp.period_close_batch
    select cu.id, cu.external_id, cu.billing_timezone, pl.id, pl.currency, per.p_start, per.p_end,
           i.id, i.total, (select pg_catalog.count(*) from meter.invoice_lines l where l.invoice_id = i.id)::integer,
           false
    from meter.customers cu
    cross join lateral (
        select (p_period || '-01')::timestamp at time zone cu.billing_timezone as p_start,
               ((p_period || '-01')::timestamp + interval '1 month') at time zone cu.billing_timezone as p_end
    ) as per
    left join lateral (
        select pl.id, pl.currency
        from meter.customer_plans cp join meter.plans pl on pl.id = cp.plan_id
        where cp.customer_id = cu.id and cp.effective_from <= p_period
        order by cp.effective_from desc limit 1
    ) as pl on true
    left join meter.invoices i on pl.id is not null and i.customer_id = cu.id and i.period_start = per.p_start
    where (p_customer is null or cu.external_id = p_customer)
      and (p_customers is null or cu.external_id = any (p_customers));

    -- Step 2: the refusals, for the first customer at fault in id order, in the order a customer
    -- is checked: a billing timezone whose months do not start on a UTC hour (22023), the period
    -- not ended `grace` ago, then (unless closed already) events past the watermark, gauges not
    -- integrated to the period's end, cancellations not subtracted (55000). Nothing is written.
    select b.*,
           pg_catalog.date_trunc('hour', b.p_start, 'UTC') <> b.p_start
               or pg_catalog.date_trunc('hour', b.p_end, 'UTC') <> b.p_end as bad_timezone,
           pg_catalog.now() < b.p_end + p_grace as not_ended,
           b.invoice_id is null and pend.first_at < b.p_end as not_rolled_up,
           b.invoice_id is null and gauge.first_until < b.p_end as not_integrated,
           b.invoice_id is null and canc.first_at < b.p_end as not_subtracted
      into v_bad
    from pg_temp.period_close_batch b
    -- (per rollup shard: its customers' events past its watermark)
    left join (select e.customer_id, pg_catalog.min(e.occurred_at) as first_at
               from meter.rollup_watermark w
               cross join lateral (select e.customer_id, e.occurred_at from meter.events e
                                   where (e.xid, e.id) >= (w.position_xid, w.position_id)
                                     and e.customer_id % w.shard_count = w.shard) e
               group by e.customer_id) as pend on pend.customer_id = b.customer_id
    left join (select g.customer_id, pg_catalog.min(g.accrued_until) as first_until
               from meter.gauge_series g group by g.customer_id) as gauge on gauge.customer_id = b.customer_id
    -- (the few cancellations not subtracted first, then their events by id: joined the other way
    -- round, the planner read every event of the table in customer order, 150 ms per 400,000)
    left join (select e.customer_id, pg_catalog.min(e.occurred_at) as first_at
               from (select x.event_id from meter.event_cancellations x where x.rolled_up_at is null offset 0) x
               join meter.events e on e.id = x.event_id
               group by e.customer_id) as canc on canc.customer_id = b.customer_id
    where b.plan_id is not null
      and (pg_catalog.date_trunc('hour', b.p_start, 'UTC') <> b.p_start
           or pg_catalog.date_trunc('hour', b.p_end, 'UTC') <> b.p_end
           or pg_catalog.now() < b.p_end + p_grace
           or (b.invoice_id is null and (pend.first_at < b.p_end or gauge.first_until < b.p_end or canc.first_at < b.p_end)))
    order by b.customer_id
    limit 1;
    if found then
        if v_bad.bad_timezone then
            raise exception 'the billing timezone % of customer % does not start months on a UTC hour (period %: %)',
                v_bad.timezone, v_bad.customer_id, p_period, v_bad.p_start
                using errcode = '22023',
                      hint = 'hourly rollups cannot be split between two periods: bill this customer in a timezone with a whole-hour offset (e.g. UTC)';
        elsif v_bad.not_ended then
            raise exception 'period % of customer % ends at % (its billing timezone); it can be closed from % (grace %)',
                p_period, v_bad.external_id, v_bad.p_end, v_bad.p_end + p_grace, p_grace
                using errcode = '55000';
        elsif v_bad.not_rolled_up then
            raise exception 'events of customer % before % are not rolled up yet', v_bad.external_id, v_bad.p_end
                using errcode = '55000', hint = 'run meterctl rollup run (or wait for the serve loop), then close again';
        elsif v_bad.not_integrated then
            raise exception 'time-weighted gauges of customer % are not integrated up to % yet', v_bad.external_id, v_bad.p_end
                using errcode = '55000', hint = 'run meterctl rollup run (each run integrates the hours that have ended), then close again';
        else
            raise exception 'cancellations of events of customer % before % are not rolled up yet', v_bad.external_id, v_bad.p_end
                using errcode = '55000', hint = 'run meterctl rollup run, then close again';
        end if;
    end if;

    -- Step 3, one statement: the lines of every customer to close (one call of the pricing
    -- shared with meter.invoice_preview), their invoices with the totals of those lines (ids in
    -- customer id order), and the lines under their invoices.
    with customers as materialized (
        select b.customer_id, b.plan_id, b.p_start, b.p_end, b.currency
        from pg_temp.period_close_batch b
        where b.plan_id is not null and b.invoice_id is null
    ),
    drafts as materialized (
        select d.*
        from meter._invoice_drafts(
            (select pg_catalog.array_agg(c.customer_id order by c.customer_id) from customers c),
            (select pg_catalog.array_agg(c.plan_id order by c.customer_id) from customers c),
            (select pg_catalog.array_agg(c.p_start order by c.customer_id) from customers c),
            (select pg_catalog.array_agg(c.p_end order by c.customer_id) from customers c),
            true) d
    ),
    made as (
        insert into meter.invoices (customer_id, period, period_start, period_end, plan_id, currency, subtotal, total)
        select c.customer_id, p_period, c.p_start, c.p_end, c.plan_id, c.currency,
               coalesce(t.total, 0), coalesce(t.total, 0)
        from customers c
        left join (select d.customer_id, pg_catalog.sum(d.amount)::bigint as total
                   from drafts d group by d.customer_id) as t on t.customer_id = c.customer_id
        order by c.customer_id
        returning id, customer_id, total
    ),
    lines as (
        insert into meter.invoice_lines (invoice_id, line_no, kind, meter_id, price_filter, adjusts_period, event_count,
                                         quantity, amount, events_hash, description)
        select m.id, d.line_no, d.kind, d.meter_id, d.price_filter, d.adjusts_period, d.event_count,
               d.quantity, d.amount, d.events_hash, d.description
        from drafts d join made m on m.customer_id = d.customer_id
        returning invoice_id
    )
    -- What the later steps need, noted in the batch (a data-modifying WITH runs to completion
    -- whether its rows are read or not: `lines` too).
    update pg_temp.period_close_batch b
    set invoice_id = m.id, invoice_total = m.total, lines = coalesce(n.lines, 0), made = true
    from made m
    left join (select d.customer_id, pg_catalog.count(*)::integer as lines from drafts d group by d.customer_id) as n
           on n.customer_id = m.customer_id
    where b.customer_id = m.customer_id;

    -- Step 4: each invoice announced to the operators' endpoints (in this transaction: exactly
    -- when the invoice exists), in customer order.
    select pg_catalog.array_agg('invoice:' || b.invoice_id order by b.customer_id),
           pg_catalog.array_agg(pg_catalog.jsonb_build_object(
               'invoice_id', b.invoice_id, 'customer', b.external_id, 'period', p_period, 'currency', b.currency,
               'total', b.invoice_total, 'lines', b.lines, 'period_start', b.p_start, 'period_end', b.p_end)
               order by b.customer_id)
      into v_keys, v_payloads
    from pg_temp.period_close_batch b
    where b.made;
    if v_keys is not null then
        perform 1 from meter._webhook_emit_all('invoice.closed', v_keys, v_payloads);
    end if;

    -- One row per customer of the call, in id order.
    return query
    select b.external_id, p_period, b.invoice_id,
           case when b.plan_id is null then 'no_plan' when b.made then 'closed' else 'already_closed' end,
           case when b.plan_id is null then 0 else b.lines end,
           b.invoice_total, b.currency
    from pg_temp.period_close_batch b
    order by b.customer_id;
end;
$$;

comment on function meter.period_close(text, text, interval, text[]) is
    'Closes a billing period into frozen invoices from rollups x prices; idempotent; late changes become adjustment lines.';

revoke all on function meter.period_close(text, text, interval, text[]) from public;
