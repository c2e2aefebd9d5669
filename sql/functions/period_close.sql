-- meter.period_close(period, customer, grace): close a billing period ('YYYY-MM') into invoices.
-- `select * from meter.period_close('2026-10');` closes every customer; with a customer's external
-- id, that customer only. One row per customer: closed, already_closed or no_plan.
--
-- Refusals (nothing is written, SQLSTATE 55000, the message says what to wait for):
--   * the period (in the customer's billing timezone, meter.billing_period) has not ended `grace`
--     ago (default 1 hour: late deliveries of the period's last minutes get that long);
--   * an event of the period is not rolled up yet, or a cancellation of one is not subtracted yet
--     (run `meterctl rollup run`): the invoice is computed from rollups, which must be complete.
--
-- For each customer with a plan in force at the period's start and no invoice for it yet, the
-- lines of meter._invoice_draft (the pricing meter.invoice_preview shows beforehand):
--   * one 'usage' line per price of the plan: per meter, or per priced filter of a meter's
--     dimension values and its default (decision 110): event count and quantity from the rollups
--     (meter._line_usage, which is meter._period_usage for a meter priced without filters), amount
--     by meter.price_amount (the one rounding rule), and the SHA-256 of the events that make the
--     line (meter._line_hash);
--   * one 'adjustment' line per earlier closed period and line whose figures changed since they
--     were invoiced (events or cancellations that arrived after that close): the difference in
--     events, quantity and amount (amount re-priced with that period's plan, minus everything
--     already invoiced for it, adjustments included). Nothing is ever dropped or re-invoiced.
-- The invoice row is the period's freeze: the unique (customer, period_start) key makes a second
-- close (or a concurrent one) create nothing, and triggers refuse any later change.
create or replace function meter.period_close(
    p_period   text,
    p_customer text default null,
    p_grace    interval default '1 hour')
returns table (customer text, period text, invoice_id bigint, outcome text, lines integer, total bigint, currency text)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
#variable_conflict use_column
declare
    v_c        record;
    v_start    timestamptz;
    v_end      timestamptz;
    v_plan     meter.plans;
    v_inv      bigint;
    v_line     integer;
    v_total    bigint;
    v_wm       meter.rollup_watermark;
begin
    if p_period is null or p_period !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' then
        raise exception 'period must be YYYY-MM, got %', coalesce(p_period, 'null') using errcode = '22023';
    end if;
    if p_grace is null or p_grace < interval '0' then
        raise exception 'grace must be a non-negative interval' using errcode = '22023';
    end if;
    if p_customer is not null and not exists (select 1 from meter.customers where external_id = p_customer) then
        raise exception 'unknown customer %', p_customer using errcode = '22023';
    end if;
    -- One close at a time (a second caller waits, then finds the invoices made).
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.close'));
    -- And no rollup run meanwhile (meter.rollup_run's lock; a run under way finishes first): the
    -- rollups, the watermark and the events they hold stay as this close reads them, so a line's
    -- quantity and its events_hash describe the same events (meter._line_hash).
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));
    select * into strict v_wm from meter.rollup_watermark where name = 'events';

    for v_c in
        select cu.id, cu.external_id from meter.customers cu
        where p_customer is null or cu.external_id = p_customer
        order by cu.id
    loop
        select pl.* into v_plan
        from meter.customer_plans cp join meter.plans pl on pl.id = cp.plan_id
        where cp.customer_id = v_c.id and cp.effective_from <= p_period
        order by cp.effective_from desc limit 1;
        if not found then
            customer := v_c.external_id; period := p_period; invoice_id := null; outcome := 'no_plan';
            lines := 0; total := null; currency := null;
            return next;
            continue;
        end if;

        select b.period_start, b.period_end into v_start, v_end from meter.billing_period(v_c.id, p_period) b;
        if pg_catalog.now() < v_end + p_grace then
            raise exception 'period % of customer % ends at % (its billing timezone); it can be closed from % (grace %)',
                p_period, v_c.external_id, v_end, v_end + p_grace, p_grace
                using errcode = '55000';
        end if;

        select i.id, i.total into v_inv, v_total from meter.invoices i where i.customer_id = v_c.id and i.period_start = v_start;
        if found then
            customer := v_c.external_id; period := p_period; invoice_id := v_inv; outcome := 'already_closed';
            lines := (select pg_catalog.count(*) from meter.invoice_lines l where l.invoice_id = v_inv);
            total := v_total; currency := v_plan.currency;
            return next;
            continue;
        end if;

        -- The rollups must hold every event of the period (and of the earlier periods that may
        -- need an adjustment): none past the watermark, no cancellation waiting to be subtracted.
        if exists (select 1 from meter.events e
                   where (e.xid, e.id) >= (v_wm.position_xid, v_wm.position_id)
                     and e.customer_id = v_c.id and e.occurred_at < v_end) then
            raise exception 'events of customer % before % are not rolled up yet', v_c.external_id, v_end
                using errcode = '55000', hint = 'run meterctl rollup run (or wait for the serve loop), then close again';
        end if;
        if exists (select 1 from meter.gauge_series g where g.customer_id = v_c.id and g.accrued_until < v_end) then
            raise exception 'time-weighted gauges of customer % are not integrated up to % yet', v_c.external_id, v_end
                using errcode = '55000', hint = 'run meterctl rollup run (each run integrates the hours that have ended), then close again';
        end if;
        if exists (select 1 from meter.event_cancellations x join meter.events e on e.id = x.event_id
                   where x.rolled_up_at is null and e.customer_id = v_c.id and e.occurred_at < v_end) then
            raise exception 'cancellations of events of customer % before % are not rolled up yet', v_c.external_id, v_end
                using errcode = '55000', hint = 'run meterctl rollup run, then close again';
        end if;

        insert into meter.invoices (customer_id, period, period_start, period_end, plan_id, currency)
        values (v_c.id, p_period, v_start, v_end, v_plan.id, v_plan.currency)
        returning id into v_inv;
        -- The lines: the pricing shared with meter.invoice_preview (meter._invoice_draft).
        insert into meter.invoice_lines (invoice_id, line_no, kind, meter_id, price_filter, adjusts_period, event_count,
                                         quantity, amount, events_hash, description)
        select v_inv, d.line_no, d.kind, d.meter_id, d.price_filter, d.adjusts_period, d.event_count,
               d.quantity, d.amount, d.events_hash, d.description
        from meter._invoice_draft(v_c.id, v_plan.id, v_start, v_end, true) d;
        get diagnostics v_line = row_count;

        select coalesce(pg_catalog.sum(l.amount), 0) into v_total from meter.invoice_lines l where l.invoice_id = v_inv;
        update meter.invoices set subtotal = v_total, total = v_total where id = v_inv;
        -- Operators' endpoints hear of it (in this transaction: exactly when the invoice exists).
        perform meter._webhook_emit('invoice.closed', 'invoice:' || v_inv, pg_catalog.jsonb_build_object(
            'invoice_id', v_inv, 'customer', v_c.external_id, 'period', p_period, 'currency', v_plan.currency,
            'total', v_total, 'lines', v_line, 'period_start', v_start, 'period_end', v_end));

        customer := v_c.external_id; period := p_period; invoice_id := v_inv; outcome := 'closed';
        lines := v_line; total := v_total; currency := v_plan.currency;
        return next;
    end loop;
end;
$$;

comment on function meter.period_close(text, text, interval) is
    'Closes a billing period into frozen invoices from rollups x prices; idempotent; late changes become adjustment lines.';

revoke all on function meter.period_close(text, text, interval) from public;
