-- billing_mock.close_periods(clock, now): bill every subscription period that ended by `now`.
--
-- For the subscriptions of customers on test clock `clock` (or, with clock null, of customers on
-- no test clock, against the real time), while current_period_end <= now: one invoice for
-- [current_period_start, current_period_end) with a line per subscription item (usage: the
-- customer's Billing Meter value for a price on a meter, else the legacy usage records per the
-- price's aggregate_usage; amount per billing_mock.price_amount), created as draft, finalized and paid
-- at the period end (events invoice.created, invoice.finalized, invoice.paid, in that order),
-- then the period moves one month on. Returns the number of invoices created.
create or replace function billing_mock.close_periods(p_clock text, p_now bigint)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
    v_sub      record;
    v_data     jsonb;
    v_start    bigint;
    v_end      bigint;
    v_item     jsonb;
    v_qty      numeric;
    v_amount   bigint;
    v_lines    jsonb;
    v_total    bigint;
    v_currency text;
    v_inv_id   text;
    v_inv      jsonb;
    v_n        integer := 0;
begin
    for v_sub in
        select s.id from billing_mock.objects s
        where s.object = 'subscription' and s.data ->> 'status' = 'active'
          and (s.data ->> 'current_period_end')::bigint <= p_now
          and (p_clock is null and s.data ->> 'test_clock' is null or s.data ->> 'test_clock' = p_clock)
        order by s.created_at
        for update
    loop
        loop
            select data into v_data from billing_mock.objects where id = v_sub.id;
            v_start := (v_data ->> 'current_period_start')::bigint;
            v_end := (v_data ->> 'current_period_end')::bigint;
            exit when v_end > p_now;

            v_lines := '[]';
            v_total := 0;
            v_currency := null;
            for v_item in select i.data from billing_mock.objects i
                          where i.object = 'subscription_item' and i.data ->> 'subscription' = v_sub.id
                          order by i.created_at
            loop
                if v_item #>> '{price,recurring,meter}' is not null then
                    -- A price on a Billing Meter: the meter's value for this customer; a
                    -- negative total bills as 0 (Stripe).
                    v_qty := greatest(billing_mock.meter_value(v_item #>> '{price,recurring,meter}', v_data ->> 'customer',
                                                               v_start, v_end), 0);
                else
                    v_qty := billing_mock.item_usage(v_item ->> 'id', v_start, v_end,
                                                     v_item #>> '{price,recurring,aggregate_usage}');
                end if;
                v_amount := billing_mock.price_amount(v_item -> 'price', v_qty);
                v_currency := coalesce(v_currency, v_item #>> '{price,currency}');
                v_total := v_total + v_amount;
                v_lines := v_lines || jsonb_build_array(jsonb_build_object(
                    'id', billing_mock.new_id('il'), 'object', 'line_item', 'type', 'subscription',
                    'amount', v_amount, 'currency', v_item #>> '{price,currency}',
                    'quantity', v_qty, 'quantity_decimal', v_qty::text,
                    'price', v_item -> 'price', 'subscription', v_sub.id, 'subscription_item', v_item ->> 'id',
                    'period', jsonb_build_object('start', v_start, 'end', v_end),
                    'description', pg_catalog.format('%s × %s', v_qty, coalesce(v_item #>> '{price,nickname}', v_item #>> '{price,id}')),
                    'livemode', false));
            end loop;

            v_inv_id := billing_mock.new_id('in');
            v_inv := jsonb_build_object(
                'id', v_inv_id, 'object', 'invoice', 'customer', v_data ->> 'customer', 'subscription', v_sub.id,
                'status', 'draft', 'currency', coalesce(v_currency, 'usd'),
                'billing_reason', 'subscription_cycle', 'collection_method', 'charge_automatically',
                'period_start', v_start, 'period_end', v_end, 'created', v_end,
                'subtotal', v_total, 'total', v_total, 'amount_due', v_total, 'amount_paid', 0,
                'amount_remaining', v_total, 'paid', false, 'attempted', false, 'livemode', false,
                'test_clock', v_data -> 'test_clock',
                'status_transitions', jsonb_build_object('finalized_at', null, 'paid_at', null,
                                                         'voided_at', null, 'marked_uncollectible_at', null),
                'lines', jsonb_build_object('object', 'list', 'data', v_lines, 'has_more', false,
                                            'total_count', jsonb_array_length(v_lines),
                                            'url', '/v1/invoices/' || v_inv_id || '/lines'));
            insert into billing_mock.objects (id, object, data) values (v_inv_id, 'invoice', v_inv);
            perform billing_mock.emit_event('invoice.created', v_inv, v_end);

            v_inv := v_inv || jsonb_build_object('status', 'open',
                'status_transitions', v_inv -> 'status_transitions' || jsonb_build_object('finalized_at', v_end));
            perform billing_mock.emit_event('invoice.finalized', v_inv, v_end);

            v_inv := v_inv || jsonb_build_object('status', 'paid', 'paid', true, 'attempted', true,
                'amount_paid', v_total, 'amount_remaining', 0,
                'status_transitions', v_inv -> 'status_transitions' || jsonb_build_object('paid_at', v_end));
            perform billing_mock.emit_event('invoice.paid', v_inv, v_end);
            update billing_mock.objects set data = v_inv where id = v_inv_id;

            update billing_mock.objects
            set data = data || jsonb_build_object(
                'current_period_start', v_end,
                'current_period_end', extract(epoch from pg_catalog.to_timestamp(v_end) + interval '1 month')::bigint,
                'latest_invoice', v_inv_id)
            where id = v_sub.id;
            v_n := v_n + 1;
        end loop;
    end loop;
    return v_n;
end;
$$;

comment on function billing_mock.close_periods(text, bigint) is
    'Bills every subscription period of a test clock (or of no clock) that ended by now; returns the number of invoices created.';
