-- Billing Meters on our side (0010_billing_meters): meter.billing_price_set with an event name
-- bills the meter through meter events (engine_api meter_events, value_scale); it refuses what
-- a Billing Meter cannot bill (a max meter, 0A000) and scales outside 0..12 (22023); a meter
-- billed so cannot become a max meter; without an event name it is back on usage records.
-- meter.webhook_process divides an engine invoice line of such a meter by 10^value_scale, so
-- the reconciliation compares quantities in the meter's own unit.
begin;
select plan(12);
\ir support/fixtures.sql

create temp table fx as
select meter.customer_upsert('tap-bm-a') as cust,
       meter.meter_upsert('tap.bm.gb', 'sum') as m_gb,
       meter.meter_upsert('tap.bm.peak', 'max') as m_peak;

select is(meter.billing_price_set('tap.bm.gb', 'price_gb', null, 'gb_stored', 3), 0::bigint,
          'billing_price_set with an event name: nothing to enqueue yet');
select results_eq($$select engine_api, event_name, value_scale from meter.billing_prices where meter_id = (select m_gb from fx)$$,
                  $$values ('meter_events'::text, 'gb_stored'::text, 3::smallint)$$,
                  '... recorded as meter events on that Billing Meter, at value scale 3');
select throws_ok($$select meter.billing_price_set('tap.bm.peak', 'price_peak', null, 'peak', 0)$$, '0A000', null,
                 'a max meter cannot be billed through a Billing Meter (0A000)');
select throws_ok($$select meter.billing_price_set('tap.bm.gb', 'price_gb', null, 'gb_stored', 13)$$, '22023', null,
                 'a value scale over 12 is refused (22023)');
select throws_ok($$select meter.billing_price_set('tap.bm.gb', 'price_gb', null, pg_catalog.repeat('e', 101), 0)$$, '22023', null,
                 'an event name over 100 characters is refused (22023)');
select throws_ok($$select meter.meter_upsert('tap.bm.gb', 'max', null, null, null, pg_catalog.date_trunc('hour', pg_catalog.now()) + interval '2 hours')$$,
                 '0A000', null, 'a meter billed through a Billing Meter cannot get a max version (0A000)');
select lives_ok($$select meter.billing_price_set('tap.bm.peak', 'price_peak')$$,
                'a max meter is billed with usage records');
select results_eq($$select engine_api, event_name, value_scale from meter.billing_prices where meter_id = (select m_peak from fx)$$,
                  $$values ('usage_records'::text, null::text, 0::smallint)$$, '... recorded as such');

-- An engine invoice line of the Billing Meter's price, in thousandths of a GB.
select meter.billing_link_record((select cust from fx), null, 'cus_tap_bm', null, null, null);
select meter.billing_link_record((select cust from fx), (select m_gb from fx), 'cus_tap_bm', 'sub_tap_bm', 'si_tap_bm_gb', 'price_gb');
select meter.billing_link_record((select cust from fx), (select m_peak from fx), 'cus_tap_bm', 'sub_tap_bm', 'si_tap_bm_peak', 'price_peak');
select meter.webhook_receive('evt_tap_bm_paid', 'invoice.paid', pg_catalog.now(), $${
  "id": "evt_tap_bm_paid", "object": "event", "type": "invoice.paid", "created": 1764000000,
  "data": {"object": {
    "id": "in_tap_bm", "object": "invoice", "customer": "cus_tap_bm", "subscription": "sub_tap_bm", "status": "paid",
    "currency": "usd", "period_start": 1761955200, "period_end": 1764547200, "subtotal": 38, "total": 38,
    "amount_due": 38, "amount_paid": 38, "created": 1764000000,
    "status_transitions": {"finalized_at": 1764000000, "paid_at": 1764000000},
    "lines": {"object": "list", "data": [
      {"id": "il_gb", "object": "line_item", "amount": 31, "currency": "usd", "quantity": 12250,
       "subscription_item": "si_tap_bm_gb", "price": {"id": "price_gb"}, "period": {"start": 1761955200, "end": 1764547200}},
      {"id": "il_peak", "object": "line_item", "amount": 7, "currency": "usd", "quantity": 7,
       "subscription_item": "si_tap_bm_peak", "price": {"id": "price_peak"}, "period": {"start": 1761955200, "end": 1764547200}}
    ]}}}}$$::jsonb);
select is(meter.webhook_process(10), 1, 'the invoice event is applied');
select results_eq($$select line_id, quantity from meter.billing_invoice_lines where invoice_id = 'in_tap_bm' order by line_id$$,
                  $$values ('il_gb'::text, 12.25::numeric), ('il_peak', 7::numeric)$$,
                  'a Billing Meter line is stored in the meter''s unit (12250 thousandths = 12.25); a usage-records line as sent');
select is((select pg_catalog.scale(quantity) from meter.billing_invoice_lines where line_id = 'il_gb'), 2,
          '... exactly, without trailing zeros');
select is((select outcome from meter.webhook_events where event_id = 'evt_tap_bm_paid'), 'applied', '... outcome applied');

select * from finish();
rollback;
