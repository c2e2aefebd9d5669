-- meter.webhook_process(limit): apply stored webhooks to meter.billing_invoices, once each.
--
-- Events are taken FOR UPDATE SKIP LOCKED (several processors never apply one twice) and marked
-- processed in the same transaction as their effect.
--
-- invoice.* events carry the whole invoice. Deliveries repeat and arrive in any order, so an
-- invoice's status only moves forward: draft (1) < open (2) < uncollectible (3) < paid / void (4)
-- (Stripe lets an uncollectible invoice still be paid or voided; paid and void are final). An
-- event with a lower or equal rank than what is stored changes nothing (outcome 'stale'), so
-- invoice.paid followed by a late invoice.finalized leaves the invoice paid. Amounts, period and
-- lines are taken from the first event and from any later event of a higher rank (a draft's
-- lines may still change; a finalized invoice's do not). Other event types are kept, 'ignored'.
--
-- Concurrency: several processors (one per `meterctl serve`) may apply two events of one invoice
-- at once, before its row exists. The rank guard is therefore in the upsert itself (ON CONFLICT
-- ... DO UPDATE ... WHERE the stored rank is lower): a processor that waited on the other's
-- insert finds the committed row and leaves a higher status alone, and the lines are replaced
-- only by the event whose upsert changed the row.
--
-- Amounts are integer minor units as the engine reports them; quantities exact numeric
-- (quantity_decimal when present, else quantity), in the meter's own unit: a line of a meter
-- billed through a Billing Meter counts in units of 10^-value_scale and is divided back. An event that cannot be applied (a malformed
-- invoice) is marked processed with outcome 'error: ...' and blocks nothing behind it.
create or replace function meter.webhook_process(p_limit integer default 100)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
    v_event   meter.webhook_events;
    v_inv     jsonb;
    v_status  text;
    v_rank    smallint;
    v_current smallint;
    v_outcome text;
    v_n       integer := 0;
begin
    for v_event in
        select * from meter.webhook_events
        where processed_at is null
          -- meter error reports are thin: the service fetches them and calls meter.sync_refused
          and type not like 'v1.billing.meter.%'
        order by received_at
        limit greatest(p_limit, 1)
        for update skip locked
    loop
        v_outcome := 'ignored';
        -- One event's failure (a malformed invoice) is recorded as its outcome and undoes only
        -- that event's effect: it never blocks the events behind it.
        begin
        if v_event.type like 'invoice.%' and v_event.payload #>> '{data,object,object}' = 'invoice' then
            v_inv := v_event.payload #> '{data,object}';
            v_status := v_inv ->> 'status';
            v_rank := case v_status when 'draft' then 1 when 'open' then 2 when 'uncollectible' then 3
                                    when 'paid' then 4 when 'void' then 4 end;
            if v_rank is null then
                v_outcome := 'unknown status ' || coalesce(v_status, 'null');
            else
                select status_rank into v_current from meter.billing_invoices
                where invoice_id = v_inv ->> 'id' for update;
                if found and v_current >= v_rank then
                    v_outcome := 'stale';
                else
                    insert into meter.billing_invoices as i (
                        invoice_id, billing_customer_id, customer_id, subscription_id, status, status_rank,
                        currency, period_start, period_end, subtotal, total, amount_due, amount_paid,
                        created, finalized_at, paid_at, last_event_id)
                    values (
                        v_inv ->> 'id', v_inv ->> 'customer',
                        (select bc.customer_id from meter.billing_customers bc
                         where bc.billing_customer_id = v_inv ->> 'customer'),
                        v_inv ->> 'subscription', v_status, v_rank, v_inv ->> 'currency',
                        pg_catalog.to_timestamp((v_inv ->> 'period_start')::bigint),
                        pg_catalog.to_timestamp((v_inv ->> 'period_end')::bigint),
                        (v_inv ->> 'subtotal')::bigint, (v_inv ->> 'total')::bigint,
                        (v_inv ->> 'amount_due')::bigint, (v_inv ->> 'amount_paid')::bigint,
                        pg_catalog.to_timestamp((v_inv ->> 'created')::bigint),
                        pg_catalog.to_timestamp((v_inv #>> '{status_transitions,finalized_at}')::bigint),
                        pg_catalog.to_timestamp((v_inv #>> '{status_transitions,paid_at}')::bigint),
                        v_event.event_id)
                    on conflict (invoice_id) do update
                        set status = excluded.status, status_rank = excluded.status_rank,
                            subtotal = excluded.subtotal, total = excluded.total,
                            amount_due = excluded.amount_due, amount_paid = excluded.amount_paid,
                            finalized_at = coalesce(excluded.finalized_at, i.finalized_at),
                            paid_at = coalesce(excluded.paid_at, i.paid_at),
                            last_event_id = excluded.last_event_id, updated_at = pg_catalog.now()
                        where i.status_rank < excluded.status_rank
                    returning i.status_rank into v_current;
                end if;
                if v_outcome = 'stale' or v_current is distinct from v_rank then
                    -- (a concurrent processor stored a rank as high or higher meanwhile)
                    v_outcome := 'stale';
                else
                    delete from meter.billing_invoice_lines where invoice_id = v_inv ->> 'id';
                    insert into meter.billing_invoice_lines (
                        invoice_id, line_id, subscription_item_id, price_id, customer_id, meter_id, price_filter,
                        quantity, amount, currency, period_start, period_end, description)
                    select v_inv ->> 'id', li ->> 'id', li ->> 'subscription_item', li #>> '{price,id}',
                           l.customer_id, l.meter_id, l.price_filter,
                           -- a Billing Meter counts in units of 10^-value_scale: back to the meter's unit
                           pg_catalog.trim_scale(coalesce(li ->> 'quantity_decimal', li ->> 'quantity', '0')::numeric
                               / pg_catalog.power(10::numeric, coalesce(bp.value_scale, 0))),
                           (li ->> 'amount')::bigint, coalesce(li ->> 'currency', v_inv ->> 'currency'),
                           pg_catalog.to_timestamp((li #>> '{period,start}')::bigint),
                           pg_catalog.to_timestamp((li #>> '{period,end}')::bigint),
                           li ->> 'description'
                    from pg_catalog.jsonb_array_elements(coalesce(v_inv #> '{lines,data}', '[]')) li
                    left join meter.billing_links l on l.subscription_item_id = li ->> 'subscription_item'
                    left join meter.billing_prices bp on bp.meter_id = l.meter_id and bp.engine_api = 'meter_events';
                    v_outcome := 'applied';
                end if;
            end if;
        end if;
        exception when others then
            v_outcome := 'error: ' || left(sqlerrm, 500);
        end;
        update meter.webhook_events set processed_at = pg_catalog.now(), outcome = v_outcome
        where event_id = v_event.event_id;
        v_n := v_n + 1;
    end loop;
    return v_n;
end;
$$;

comment on function meter.webhook_process(integer) is
    'Applies stored billing webhooks once each; invoice status only moves forward.';

revoke all on function meter.webhook_process(integer) from public;
