-- Billing Meters on our side (0010_billing_meters): meter.billing_price_set with an event name
-- bills the meter through meter events (engine_api meter_events, value_scale); it refuses what
-- one Billing Meter cannot bill (versions mixing max and other aggregations, 0A000) and scales
-- outside 0..12 (22023); a meter billed so cannot change between max and another aggregation;
-- without an event name it is on usage records. A max meter billed so sends each hour's running
-- maximum of its UTC month, and a change of an earlier hour sends the later ones of the month
-- again (a new outbox revision, ahead of the rollup's). meter.webhook_process divides an engine
-- invoice line of such a meter by 10^value_scale: the reconciliation compares the meter's unit.
begin;
select plan(26);
\ir support/fixtures.sql

create temp table fx as
select meter.customer_upsert('tap-bm-a') as cust,
       meter.meter_upsert('tap.bm.gb', 'sum') as m_gb,
       meter.meter_upsert('tap.bm.peak', 'max') as m_peak,
       meter.meter_upsert('tap.bm.calls', 'count') as m_calls,
       meter.meter_upsert('tap.bm.mixed', 'sum') as m_mixed;
select meter.meter_upsert('tap.bm.mixed', 'max', null, null, null, pg_catalog.date_trunc('hour', pg_catalog.now()) + interval '3 hours');

select is(meter.billing_price_set('tap.bm.gb', 'price_gb', null, 'gb_stored', 3), 0::bigint,
          'billing_price_set with an event name: nothing to enqueue yet');
select results_eq($$select engine_api, event_name, value_scale from meter.billing_prices where meter_id = (select m_gb from fx)$$,
                  $$values ('meter_events'::text, 'gb_stored'::text, 3::smallint)$$,
                  '... recorded as meter events on that Billing Meter, at value scale 3');
select throws_ok($$select meter.billing_price_set('tap.bm.mixed', 'price_mixed', null, 'mixed', 0)$$, '0A000', null,
                 'a meter mixing max and sum versions cannot be billed through one Billing Meter (0A000)');
select throws_ok($$select meter.billing_price_set('tap.bm.gb', 'price_gb', null, 'gb_stored', 13)$$, '22023', null,
                 'a value scale over 12 is refused (22023)');
select throws_ok($$select meter.billing_price_set('tap.bm.gb', 'price_gb', null, pg_catalog.repeat('e', 101), 0)$$, '22023', null,
                 'an event name over 100 characters is refused (22023)');
select throws_ok($$select meter.meter_upsert('tap.bm.gb', 'max', null, null, null, pg_catalog.date_trunc('hour', pg_catalog.now()) + interval '2 hours')$$,
                 '0A000', null, 'a meter billed through a Billing Meter cannot get a max version (0A000)');
select lives_ok($$select meter.billing_price_set('tap.bm.calls', 'price_calls')$$,
                'without an event name: usage records');
select results_eq($$select engine_api, event_name, value_scale from meter.billing_prices where meter_id = (select m_calls from fx)$$,
                  $$values ('usage_records'::text, null::text, 0::smallint)$$, '... recorded as such');

-- A max meter through a Billing Meter: the running maximum of the month.
select lives_ok($$select meter.billing_price_set('tap.bm.peak', 'price_peak', null, 'peak', 0)$$,
                'a max meter may be billed through a Billing Meter');
select meter.billing_link_record((select cust from fx), null, 'cus_tap_bm', null, null, null);
select meter.billing_link_record((select cust from fx), (select m_peak from fx), 'cus_tap_bm', 'sub_tap_bm', 'si_tap_bm_peak', 'price_peak');
select pg_temp.put('tap-bm-a', 'tap.bm.peak', 'p1', '2024-03-10 10:05+00', 5);
select pg_temp.put('tap-bm-a', 'tap.bm.peak', 'p2', '2024-03-10 12:05+00', 3);
select pg_temp.put('tap-bm-a', 'tap.bm.peak', 'p3', '2024-04-01 00:05+00', 1);
select meter.rollup_run();
create temp table claim1 as select * from meter.sync_claim('tap-bm-worker');
select results_eq($$select hour, quantity, revision from claim1 order by hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 5::numeric, 1::bigint),
                           ('2024-03-10 12:00+00', 5, 1),
                           ('2024-04-01 00:00+00', 1, 1)$$,
                  'each hour carries the running maximum of its UTC month (12:00: 5, from 10:00; revision 1: a new '
                  'hour, named once though an earlier hour of its month changed in the same run); April starts again');
select meter.sync_succeeded(customer_id, meter_id, hour, claim_token) from claim1;
-- Committed after that run (rollup_run.test.sql explains the emulation): the watermark back to
-- the horizon run 1 is taken to have had (xid 101), and a late event of transaction 101.
update meter.rollup_watermark set position_xid = '101', position_id = 0;
select pg_temp.put('tap-bm-a', 'tap.bm.peak', 'p4', '2024-03-10 10:45+00', 8, '{}', '101');   -- late, raises 10:00 to 8
select meter.rollup_run();
select results_eq($$select o.hour, o.state, o.revision, r.revision from meter.sync_outbox o
                    join meter.rollup_hourly r using (customer_id, meter_id, hour) order by o.hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 'pending'::text, 2::bigint, 2::bigint),
                           ('2024-03-10 12:00+00', 'pending', 2, 1),
                           ('2024-04-01 00:00+00', 'synced', 1, 1)$$,
                  'a change at 10:00 sends 12:00 again (outbox revision ahead of its rollup''s), not April');
create temp table claim2 as select * from meter.sync_claim('tap-bm-worker');
select results_eq($$select hour, quantity, revision from claim2 order by hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 8::numeric, 2::bigint), ('2024-03-10 12:00+00', 8, 2)$$,
                  '... both with the new maximum, under new keys');
select is((select pg_catalog.count(distinct idempotency_key) from (select idempotency_key from claim1 union all select idempotency_key from claim2) k),
          5::bigint, 'no key is used for two contents');
select meter.sync_succeeded(customer_id, meter_id, hour, claim_token) from claim2;
select is((select pg_catalog.count(*) from meter.sync_outbox where state <> 'synced'), 0::bigint, 'then everything is synced');

-- The engine refuses, after the fact, the event that synced 10:00 (revision 2): an error report.
select meter.webhook_receive('evt_tap_bm_report', 'v1.billing.meter.error_report_triggered', pg_catalog.now(),
                             '{"id": "evt_tap_bm_report", "object": "v2.core.event", "type": "v1.billing.meter.error_report_triggered"}');
select is(meter.webhook_process(10), 0, 'webhook_process leaves a meter error report to the service (it is fetched in full)');
select is(meter.sync_refused('evt_tap_bm_report', pg_catalog.format($${"data": {"reason": {"error_count": 3, "error_types": [
              {"code": "archived_meter", "error_count": 3, "sample_errors": [
                  {"error_message": "meter inactive", "request": {"identifier": "%s"}},
                  {"error_message": "meter inactive", "request": {"identifier": "%s"}},
                  {"error_message": "not ours", "request": {"identifier": "someone-else-42"}}]}]}}}$$,
              (select idempotency_key from claim2 where hour = '2024-03-10 10:00+00'),
              (select idempotency_key from claim1 where hour = '2024-03-10 12:00+00'))::jsonb),
          1, 'sync_refused parks the hour whose current synced event was refused; an older revision''s refusal and a foreign identifier change nothing');
select results_eq($$select hour, state, synced_revision, synced_quantity is null, last_error like 'engine refused asynchronously (evt_tap_bm_report): archived_meter: meter inactive'
                    from meter.sync_outbox where hour < '2024-04-01' order by hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 'dead'::text, 0::bigint, true, true),
                           ('2024-03-10 12:00+00', 'synced', 2, false, null)$$,
                  '... dead with the engine''s code and message, no longer counted as synced');
select is((select outcome from meter.webhook_events where event_id = 'evt_tap_bm_report'),
          'applied: 1 hour(s) parked dead; 3 refusal(s) counted, 3 named', 'the report is processed, with what it did');
select lives_ok($$select meter.sync_retry('tap-bm-a', 'tap.bm.peak')$$, 'sync retry re-drives it');

-- March is closed on our side (so the engine invoiced it first); a change to one of its hours
-- is not sent (Billing Meters would take it, into an invoiced period) but closed.
insert into meter.plans (code, currency) values ('tap-bm-plan', 'usd');
insert into meter.invoices (customer_id, period, period_start, period_end, plan_id, currency)
values ((select cust from fx), '2024-03', '2024-03-01 00:00+00', '2024-04-01 00:00+00',
        (select id from meter.plans where code = 'tap-bm-plan'), 'usd');
update meter.rollup_watermark set position_xid = '102', position_id = 0;
select pg_temp.put('tap-bm-a', 'tap.bm.peak', 'p5', '2024-03-10 12:30+00', 20, '{}', '102');
select pg_temp.put('tap-bm-a', 'tap.bm.peak', 'p6', '2024-04-01 00:30+00', 2, '{}', '102');
select meter.rollup_run();
select results_eq($$select hour, quantity from meter.sync_claim('tap-bm-worker') order by hour$$,
                  $$values ('2024-04-01 00:00+00'::timestamptz, 2::numeric)$$,
                  'after our close of March, only April''s changed hour is sent');
select results_eq($$select hour, state from meter.sync_outbox where hour < '2024-04-01' order by hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 'closed'::text), ('2024-03-10 12:00+00', 'closed')$$,
                  '... March''s are closed, not sent (the retried one too): the next invoice''s adjustment carries them');

-- An engine invoice line of the Billing Meter's price, in thousandths of a GB.
select meter.billing_link_record((select cust from fx), (select m_gb from fx), 'cus_tap_bm', 'sub_tap_bm', 'si_tap_bm_gb', 'price_gb');
select meter.billing_link_record((select cust from fx), (select m_calls from fx), 'cus_tap_bm', 'sub_tap_bm', 'si_tap_bm_calls', 'price_calls');
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
      {"id": "il_calls", "object": "line_item", "amount": 7, "currency": "usd", "quantity": 7,
       "subscription_item": "si_tap_bm_calls", "price": {"id": "price_calls"}, "period": {"start": 1761955200, "end": 1764547200}}
    ]}}}}$$::jsonb);
select is(meter.webhook_process(10), 1, 'the invoice event is applied');
select results_eq($$select line_id, quantity from meter.billing_invoice_lines where invoice_id = 'in_tap_bm' order by line_id$$,
                  $$values ('il_calls'::text, 7::numeric), ('il_gb', 12.25)$$,
                  'a Billing Meter line is stored in the meter''s unit (12250 thousandths = 12.25); a usage-records line as sent');
select is((select pg_catalog.scale(quantity) from meter.billing_invoice_lines where line_id = 'il_gb'), 2,
          '... exactly, without trailing zeros');
select is((select outcome from meter.webhook_events where event_id = 'evt_tap_bm_paid'), 'applied', '... outcome applied');

-- What EngineUsage asks the engine for a period: every billed pair, with its API, event name,
-- value scale, the engine's customer and item, and the customer's period bounds.
select results_eq(
    $$select meter, billing_customer_id, subscription_item_id, engine_api, event_name, value_scale, period_start, period_end
      from meter.billing_usage_targets('2024-03') where customer = 'tap-bm-a'$$,
    $$values ('tap.bm.calls'::text, 'cus_tap_bm'::text, 'si_tap_bm_calls'::text, 'usage_records'::text, null::text,
              0::smallint, '2024-03-01 00:00+00'::timestamptz, '2024-04-01 00:00+00'::timestamptz),
             ('tap.bm.gb', 'cus_tap_bm', 'si_tap_bm_gb', 'meter_events', 'gb_stored', 3::smallint,
              '2024-03-01 00:00+00', '2024-04-01 00:00+00'),
             ('tap.bm.peak', 'cus_tap_bm', 'si_tap_bm_peak', 'meter_events', 'peak', 0::smallint,
              '2024-03-01 00:00+00', '2024-04-01 00:00+00')$$,
    'billing_usage_targets: each billed pair of the customer with what to ask the engine');

select * from finish();
rollback;
