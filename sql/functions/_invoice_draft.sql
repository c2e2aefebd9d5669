-- meter._invoice_draft(customer_id, plan_id, period_start, period_end, with_hashes): the lines an
-- invoice of that customer, plan and period would have if it were closed now; the one pricing of
-- meter.period_close (which writes them) and meter.invoice_preview (which shows them).
--
--   * one 'usage' line per price of the plan, per meter and, for a meter priced per filter of its
--     dimensions, per filter then its default (decision 110): event count and quantity from the
--     rollups (meter._line_usage), amount by meter.price_amount (the one rounding rule);
--   * one 'adjustment' line per earlier closed period and line whose figures moved since they
--     were invoiced (events or cancellations that arrived after that close): the difference in
--     events, quantity and amount (re-priced with that period's plan, minus everything already
--     invoiced for it, adjustments included).
-- Line numbers in that order from 1. events_hash (meter._line_hash) only when with_hashes: the
-- close stores it; a preview of an open period does not need to hash its events.
--
-- Reads only: the caller decides whether the rollups are complete (period_close refuses while
-- they are not; a preview says how fresh they are).
create or replace function meter._invoice_draft(
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

comment on function meter._invoice_draft(bigint, bigint, timestamptz, timestamptz, boolean) is
    'The lines an invoice would have if closed now (usage per price, adjustments): the pricing shared by period_close and invoice_preview.';
revoke all on function meter._invoice_draft(bigint, bigint, timestamptz, timestamptz, boolean) from public;
