-- meter.invoice_preview(customer, period): the invoice of a customer's period as the close would
-- write it now, or as it was written. `select * from meter.invoice_preview('acme');` previews the
-- open period (the current month in the customer's billing timezone); `..., '2026-10')` any period.
--
--   status 'closed'  the period's frozen invoice, line for line (meter.invoice_lines)
--   status 'ended'   the period has ended but is not closed yet: what meter.period_close would write
--                    now (the same function, meter._invoice_draft: one pricing, not two)
--   status 'open'    the period so far: the same lines over the usage rolled up until now, and the
--                    adjustments the next invoice will carry for earlier periods
-- One row per line (line_no from 1), each with the period's bounds, status, currency and invoice
-- id (closed only); a plan without prices gives one row with the line columns null. Amounts in
-- minor units of the currency, rounded once per line (meter.price_amount). The figures are as
-- fresh as the rollups: events not rolled up yet are not in them (meter.rollup_lag_seconds();
-- the API returns it beside the preview).
--
-- Refusals: period not YYYY-MM (22023); unknown customer, or no plan in force in the period
-- (P0002). Reads only; SECURITY DEFINER for the service's and analysts' roles, which may not read
-- invoices and rollups of every kind themselves.
create or replace function meter.invoice_preview(p_customer text, p_period text default null)
returns table (period text, status text, period_start timestamptz, period_end timestamptz, currency text,
               invoice_id bigint, line_no integer, kind text, meter text, line text, price_filter jsonb,
               adjusts_period text, event_count bigint, quantity numeric, amount bigint)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
#variable_conflict use_column
declare
    v_c     meter.customers;
    v_plan  meter.plans;
    v_inv   meter.invoices;
    v_found boolean := false;
    v_r     record;
    v_start timestamptz;
    v_end   timestamptz;
begin
    select * into v_c from meter.customers c where c.external_id = p_customer;
    if not found then
        raise exception 'no customer with external id %', coalesce(p_customer, 'null') using errcode = 'P0002';
    end if;
    period := coalesce(p_period, pg_catalog.to_char(pg_catalog.now() at time zone v_c.billing_timezone, 'YYYY-MM'));
    if period !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' then
        raise exception 'period must be YYYY-MM, got %', period using errcode = '22023';
    end if;
    select b.period_start, b.period_end into v_start, v_end from meter.billing_period(v_c.id, period) b;
    period_start := v_start; period_end := v_end;

    -- (local names: with use_column, period_start would be the invoices' column here)
    select * into v_inv from meter.invoices i where i.customer_id = v_c.id and i.period_start = v_start;
    if found then
        status := 'closed'; currency := v_inv.currency; invoice_id := v_inv.id;
        for v_r in
            select l.line_no, l.kind, m.code as meter, m.code || meter._filter_label(l.price_filter, exists (
                       select 1 from meter.plan_prices f where f.plan_id = v_inv.plan_id and f.meter_id = l.meter_id
                                                           and f.filter <> '{}')) as line,
                   l.price_filter, l.adjusts_period, l.event_count, l.quantity, l.amount
            from meter.invoice_lines l join meter.meters m on m.id = l.meter_id
            where l.invoice_id = v_inv.id order by l.line_no
        loop
            line_no := v_r.line_no; kind := v_r.kind; meter := v_r.meter; line := v_r.line; price_filter := v_r.price_filter;
            adjusts_period := v_r.adjusts_period; event_count := v_r.event_count; quantity := v_r.quantity; amount := v_r.amount;
            v_found := true;
            return next;
        end loop;
    else
        select pl.* into v_plan
        from meter.customer_plans cp join meter.plans pl on pl.id = cp.plan_id
        where cp.customer_id = v_c.id and cp.effective_from <= period
        order by cp.effective_from desc limit 1;
        if not found then
            raise exception 'customer % has no plan in force in %', p_customer, period using errcode = 'P0002';
        end if;
        status := case when pg_catalog.now() >= v_end then 'ended' else 'open' end;
        currency := v_plan.currency; invoice_id := null;
        for v_r in
            select d.line_no, d.kind, m.code as meter, m.code || meter._filter_label(d.price_filter, exists (
                       select 1 from meter.plan_prices f where f.plan_id = v_plan.id and f.meter_id = d.meter_id
                                                           and f.filter <> '{}')) as line,
                   d.price_filter, d.adjusts_period, d.event_count, d.quantity, d.amount
            from meter._invoice_draft(v_c.id, v_plan.id, v_start, v_end, false) d
            join meter.meters m on m.id = d.meter_id
            order by d.line_no
        loop
            line_no := v_r.line_no; kind := v_r.kind; meter := v_r.meter; line := v_r.line; price_filter := v_r.price_filter;
            adjusts_period := v_r.adjusts_period; event_count := v_r.event_count; quantity := v_r.quantity; amount := v_r.amount;
            v_found := true;
            return next;
        end loop;
    end if;
    if not v_found then
        line_no := null; kind := null; meter := null; line := null; price_filter := null; adjusts_period := null;
        event_count := null; quantity := null; amount := null;
        return next;
    end if;
end;
$$;

comment on function meter.invoice_preview(text, text) is
    'A customer''s invoice for a period: frozen (closed), or as the close would write it now (ended, open), line by line.';
revoke all on function meter.invoice_preview(text, text) from public;
grant execute on function meter.invoice_preview(text, text) to meter_ingest, meter_analyst;
