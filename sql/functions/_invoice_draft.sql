-- meter._invoice_draft(customer_id, plan_id, period_start, period_end, with_hashes): the lines an
-- invoice of that customer, plan and period would have if it were closed now: meter._invoice_drafts
-- for one customer (its header states the lines, their order and their figures). What
-- meter.invoice_preview shows; meter.period_close writes the same lines for every customer it
-- closes with one call of meter._invoice_drafts.
--
-- Reads only: the caller decides whether the rollups are complete.
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
begin
    return query
    select d.line_no, d.kind, d.meter_id, d.price_filter, d.adjusts_period,
           d.event_count, d.quantity, d.amount, d.events_hash, d.description
    from meter._invoice_drafts(array[p_customer_id], array[p_plan_id], array[p_start], array[p_end], p_with_hashes) d;
end;
$$;

comment on function meter._invoice_draft(bigint, bigint, timestamptz, timestamptz, boolean) is
    'The lines an invoice would have if closed now (usage per price, adjustments): the pricing shared by period_close and invoice_preview.';
revoke all on function meter._invoice_draft(bigint, bigint, timestamptz, timestamptz, boolean) from public;
