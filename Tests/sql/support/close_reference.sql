-- The per-customer pricing of the month close as it was before the set-based close (decision 120):
-- meter._invoice_draft of commit 0328249, a loop over one customer's prices and earlier invoices,
-- copied here as pg_temp.ref_invoice_draft (the same text, only its name changed). It prices each
-- line with the per-line functions meter._line_usage and meter._line_hash, which the product
-- keeps (the reconciliation's own recomputation of a line). The tests that close periods compare
-- what meter.period_close wrote with what this computes for the same customer, plan and period:
-- pg_temp.ref_expect before a close, pg_temp.ref_differences after it. The invoices must be the
-- same to the byte: the set-based close and the per-line pricing agree.
--
-- Include with \ir support/close_reference.sql in a test's transaction.

create function pg_temp.ref_invoice_draft(
    p_customer_id bigint,
    p_plan_id     bigint,
    p_start       timestamptz,
    p_end         timestamptz,
    p_with_hashes boolean default true)
returns table (line_no integer, kind text, meter_id bigint, price_filter jsonb, adjusts_period text,
               event_count bigint, quantity numeric, amount bigint, events_hash text, description text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
#variable_conflict use_column
declare
    v_p      record;
    v_u      record;
    v_old    record;
    v_amount bigint;
begin
    line_no := 0;
    -- Usage lines.
    for v_p in
        select pp.*, m.code as meter_code,
               exists (select 1 from meter.plan_prices f
                       where f.plan_id = pp.plan_id and f.meter_id = pp.meter_id and f.filter <> '{}') as has_filters
        from meter.plan_prices pp join meter.meters m on m.id = pp.meter_id
        where pp.plan_id = p_plan_id order by m.code, pp.filter = '{}', pp.filter
    loop
        select * into v_u from meter._line_usage(p_customer_id, v_p.meter_id, p_start, p_end, p_plan_id, v_p.filter);
        line_no := line_no + 1;
        kind := 'usage'; meter_id := v_p.meter_id; price_filter := v_p.filter; adjusts_period := null;
        event_count := v_u.event_count; quantity := v_u.quantity;
        amount := meter.price_amount(v_p.model, v_p.unit_amount, v_p.package_size, v_p.tiers, v_u.quantity);
        events_hash := case when p_with_hashes
                            then meter._line_hash(p_customer_id, v_p.meter_id, p_start, p_end, p_plan_id, v_p.filter) end;
        description := pg_catalog.format('%s%s: %s (%s, %s)', v_p.meter_code, meter._filter_label(v_p.filter, v_p.has_filters),
                                         pg_catalog.trim_scale(v_u.quantity), v_u.aggregation, v_p.model);
        return next;
    end loop;

    -- Adjustments for earlier closed periods whose rollups moved since they were invoiced.
    for v_old in
        select oi.period, oi.period_start, oi.period_end, oi.plan_id, l.meter_id, l.price_filter, m.code as meter_code,
               pp.model, pp.unit_amount, pp.package_size, pp.tiers,
               exists (select 1 from meter.plan_prices f
                       where f.plan_id = oi.plan_id and f.meter_id = l.meter_id and f.filter <> '{}') as has_filters,
               pg_catalog.sum(l.event_count) as n, pg_catalog.sum(l.quantity) as q, pg_catalog.sum(l.amount) as a
        from meter.invoices oi
        join meter.invoice_lines l on (l.kind = 'usage' and l.invoice_id = oi.id)
        join meter.meters m on m.id = l.meter_id
        join meter.plan_prices pp on pp.plan_id = oi.plan_id and pp.meter_id = l.meter_id and pp.filter = l.price_filter
        where oi.customer_id = p_customer_id and oi.period_start < p_start
        group by oi.period, oi.period_start, oi.period_end, oi.plan_id, l.meter_id, l.price_filter, m.code,
                 pp.model, pp.unit_amount, pp.package_size, pp.tiers
        order by oi.period_start, m.code, l.price_filter = '{}', l.price_filter
    loop
        -- what earlier adjustments already added for that period and line
        select v_old.n + coalesce(pg_catalog.sum(a.event_count), 0), v_old.q + coalesce(pg_catalog.sum(a.quantity), 0),
               v_old.a + coalesce(pg_catalog.sum(a.amount), 0)
          into v_old.n, v_old.q, v_old.a
        from meter.invoice_lines a join meter.invoices ai on ai.id = a.invoice_id
        where ai.customer_id = p_customer_id and a.kind = 'adjustment' and a.adjusts_period = v_old.period
          and a.meter_id = v_old.meter_id and a.price_filter = v_old.price_filter;
        select * into v_u from meter._line_usage(p_customer_id, v_old.meter_id, v_old.period_start, v_old.period_end,
                                                 v_old.plan_id, v_old.price_filter);
        v_amount := meter.price_amount(v_old.model, v_old.unit_amount, v_old.package_size, v_old.tiers, v_u.quantity);
        if v_u.event_count <> v_old.n or v_u.quantity <> v_old.q or v_amount <> v_old.a then
            line_no := line_no + 1;
            kind := 'adjustment'; meter_id := v_old.meter_id; price_filter := v_old.price_filter;
            adjusts_period := v_old.period;
            event_count := v_u.event_count - v_old.n; quantity := v_u.quantity - v_old.q; amount := v_amount - v_old.a;
            events_hash := case when p_with_hashes
                                then meter._line_hash(p_customer_id, v_old.meter_id, v_old.period_start, v_old.period_end,
                                                      v_old.plan_id, v_old.price_filter) end;
            description := pg_catalog.format('%s%s: adjustment for %s (events or cancellations after its close): %s -> %s',
                                             v_old.meter_code, meter._filter_label(v_old.price_filter, v_old.has_filters),
                                             v_old.period, pg_catalog.trim_scale(v_old.q), pg_catalog.trim_scale(v_u.quantity));
            return next;
        end if;
    end loop;
end;
$$;

-- What the per-customer pricing computes for the customers a close of p_period (of p_customer
-- only, when given) will invoice: those with a plan in force at the period's start and no invoice
-- for it yet. Call it right before the close (the drafts see the earlier invoices as they are
-- then; after the close, its own adjustment lines would count as invoiced already).
create temp table ref_expected (customer_id bigint, period_start timestamptz, line_no integer, kind text,
                                meter_id bigint, price_filter jsonb, adjusts_period text, event_count bigint,
                                quantity numeric, amount bigint, events_hash text, description text);
create function pg_temp.ref_expect(p_period text, p_customer text default null)
returns void
language sql
as $$
    insert into ref_expected
    select c.id, b.period_start, r.*
    from meter.customers c
    cross join lateral meter.billing_period(c.id, p_period) b
    cross join lateral (select cp.plan_id from meter.customer_plans cp
                        where cp.customer_id = c.id and cp.effective_from <= p_period
                        order by cp.effective_from desc limit 1) p
    cross join lateral pg_temp.ref_invoice_draft(c.id, p.plan_id, b.period_start, b.period_end, true) r
    where (p_customer is null or c.external_id = p_customer)
      and not exists (select 1 from meter.invoices i where i.customer_id = c.id and i.period_start = b.period_start)
$$;

-- The lines of the given invoices that differ from what pg_temp.ref_expect computed for the same
-- customer and period, both ways (stored but not computed, computed but not stored). Empty = the
-- same to the byte (numbers compared as text: 2.50 and 2.5 differ).
create function pg_temp.ref_differences(p_invoice_ids bigint[])
returns table (side text, invoice_id bigint, line_no integer, kind text, meter_id bigint, price_filter jsonb,
               adjusts_period text, event_count bigint, quantity text, amount bigint, events_hash text, description text)
language sql
as $$
    with stored as (
        select l.invoice_id, l.line_no, l.kind, l.meter_id, l.price_filter, l.adjusts_period, l.event_count,
               l.quantity::text as quantity, l.amount, l.events_hash, l.description
        from meter.invoices i join meter.invoice_lines l on l.invoice_id = i.id
        where i.id = any (p_invoice_ids)
    ),
    computed as (
        select i.id, r.line_no, r.kind, r.meter_id, r.price_filter, r.adjusts_period, r.event_count,
               r.quantity::text, r.amount, r.events_hash, r.description
        from meter.invoices i
        join ref_expected r on r.customer_id = i.customer_id and r.period_start = i.period_start
        where i.id = any (p_invoice_ids)
    )
    (select 'stored only', * from stored except select 'stored only', * from computed)
    union all
    (select 'computed only', * from computed except select 'computed only', * from stored)
$$;

-- The invoice ids of a customer (external id) for a period.
create function pg_temp.invoices_of(p_customer text, p_period text)
returns bigint[]
language sql
as $$
    select pg_catalog.array_agg(i.id) from meter.invoices i join meter.customers c on c.id = i.customer_id
    where c.external_id = p_customer and i.period = p_period
$$;
