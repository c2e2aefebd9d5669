-- The time_weighted_sum aggregation (0014_gauge_time_weighted, issue 15): a gauge whose value
-- holds from each event until the next (by occurred_at, then the greater idempotency key), the
-- last one until now, integrated per complete UTC hour in value x hours rounded to 6 decimals.
-- rollup_run recomputes a series from the earliest hour a run touched (late events,
-- cancellations) and extends every series to the last complete hour (meter.gauge_series);
-- rollup_verify recomputes the integrals; _period_usage, usage, the reconciliation's raw figure
-- and the billing sync read the hourly integrals. Every expected figure below is worked out by
-- hand in its comment.
--
-- Emulated history as in rollup_run.test.sql (xid 100, then 101 for late events).
begin;
select plan(18);
\ir support/fixtures.sql

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-gt-a') as cust,
       meter.customer_upsert('tap-gt-b') as cust_b,
       meter.meter_upsert('tap.gt.gb', 'time_weighted_sum') as m_gb;

select meter.meter_upsert('tap.gt.dims', 'time_weighted_sum', null, null, null, null, array['region']);
select throws_ok($$select meter.meter_upsert('tap.gt.dims', 'time_weighted_sum', null, null, null, null, array['zone'])$$,
                 '0A000', null, 'a time-weighted gauge keeps its dimensions: no new version changes them (0A000)');
select throws_ok($$select meter.meter_upsert('tap.gt.gb', 'sum')$$,
                 '0A000', null, 'a time-weighted gauge cannot become another aggregation by a new version (0A000)');

-- a1 10:00 = 10; a2 10:30 = 20; a3 12:15 = 0 and a4 12:15 = 6 (same instant, greater key: 6
-- holds); a5 13:00 = 0.
select pg_temp.put('tap-gt-a', 'tap.gt.gb', 'a1', '2024-03-10 10:00+00', 10);
select pg_temp.put('tap-gt-a', 'tap.gt.gb', 'a2', '2024-03-10 10:30+00', 20);
select pg_temp.put('tap-gt-a', 'tap.gt.gb', 'a3', '2024-03-10 12:15+00', 0);
select pg_temp.put('tap-gt-a', 'tap.gt.gb', 'a4', '2024-03-10 12:15+00', 6);
select pg_temp.put('tap-gt-a', 'tap.gt.gb', 'a5', '2024-03-10 13:00+00', 0);
-- b1 10:00:00 = 1, b2 10:00:01 = 0: one second of 1.
select pg_temp.put('tap-gt-b', 'tap.gt.gb', 'b1', '2024-03-10 10:00:00+00', 1);
select pg_temp.put('tap-gt-b', 'tap.gt.gb', 'b2', '2024-03-10 10:00:01+00', 0);

create temp view hours as
select c.external_id as customer, r.hour, r.event_count, r.quantity, r.revision
from meter.rollup_hourly r join meter.customers c on c.id = r.customer_id
where r.meter_id = (select m_gb from fx);

select is((select events_folded from meter.rollup_run()), 7::bigint, 'seven events folded');
select results_eq($$select hour, event_count, quantity from hours where customer = 'tap-gt-a' order by hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 2::bigint, 15::numeric),  -- 10 x 0.5 + 20 x 0.5
                           ('2024-03-10 11:00+00', 0, 20),                                  -- 20 held, no event
                           ('2024-03-10 12:00+00', 2, 9.5),                                 -- 20 x 0.25 + 6 x 0.75
                           ('2024-03-10 13:00+00', 1, 0)$$,                                 -- 0 from 13:00: no later hour
                  'each complete hour holds the integral of the values held, hours without events included');
select results_eq($$select hour, quantity from hours where customer = 'tap-gt-b'$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 0.000278::numeric)$$,
                  'one second of 1: 1/3600 rounded to 6 decimals');
select is((select accrued_until from meter.gauge_series where customer_id = (select cust from fx)),
          pg_catalog.date_trunc('hour', pg_catalog.now()), 'the series is accrued up to the current hour');
select is((select quantity from meter._period_usage((select cust from fx), (select m_gb from fx), '2024-03-01 00:00+00', '2024-04-01 00:00+00')),
          44.5::numeric, 'the period is the Σ of its hours (15 + 20 + 9.5)');
select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'rollup_verify recomputes the integrals: no difference');

-- A late event a6 11:30 = 40: 11:00 = 20 x 0.5 + 40 x 0.5 = 30; 12:00 = 40 x 0.25 + 6 x 0.75 = 14.5.
update meter.rollup_watermark set position_xid = '101', position_id = 0;
select pg_temp.put('tap-gt-a', 'tap.gt.gb', 'a6', '2024-03-10 11:30+00', 40, '{}', '101');
select is((select events_folded from meter.rollup_run()), 1::bigint, 'the late event is folded');
select results_eq($$select hour, quantity from hours where customer = 'tap-gt-a' order by hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 15::numeric), ('2024-03-10 11:00+00', 30),
                           ('2024-03-10 12:00+00', 14.5), ('2024-03-10 13:00+00', 0)$$,
                  'a late event re-derives the hours it changes');

-- Cancelling a4: at 12:15 a3's 0 holds: 12:00 = 40 x 0.25 = 10.
select meter.event_cancel('[{"customer": "tap-gt-a", "idempotency_key": "a4"}]');
select is((select cancellations_folded from meter.rollup_run()), 1::bigint, 'the cancellation is folded');
select results_eq($$select hour, event_count, quantity from hours where customer = 'tap-gt-a' and hour = '2024-03-10 12:00+00'$$,
                  $$values ('2024-03-10 12:00+00'::timestamptz, 1::bigint, 10::numeric)$$,
                  'a cancelled value no longer holds');
select is((select pg_catalog.sum(quantity) from meter._gauge_hours((select cust from fx), (select m_gb from fx),
                                                                  '2024-03-01 00:00+00', '2024-04-01 00:00+00')),
          55::numeric, 'the raw recomputation (the reconciliation''s) agrees: 15 + 30 + 10');
select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'rollup_verify still empty');

-- A series behind: the next run extends it from where it stood (a damaged hour after that
-- point is recomputed too).
update meter.gauge_series set accrued_until = '2024-03-10 11:00+00' where customer_id = (select cust from fx);
update meter.rollup_hourly set quantity = 999 where customer_id = (select cust from fx) and hour = '2024-03-10 12:00+00';
select meter.rollup_run();
select results_eq($$select quantity from hours where customer = 'tap-gt-a' and hour = '2024-03-10 12:00+00'$$,
                  $$values (10::numeric)$$, 'a run extends a series behind the current hour from where it stood');

-- Billing: the hours go out as hourly figures, like a sum meter's.
select meter.billing_price_set('tap.gt.gb', 'price_gt');
select meter.billing_link_record((select cust from fx), null, 'cus_tap_gt', null, null, null);
select meter.billing_link_record((select cust from fx), (select m_gb from fx), 'cus_tap_gt', 'sub_tap_gt', 'si_tap_gt', 'price_gt');
select results_eq($$select hour, quantity from meter.sync_claim('tap-gt-worker') where customer_id = (select cust from fx) order by hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 15::numeric), ('2024-03-10 11:00+00', 30),
                           ('2024-03-10 12:00+00', 10), ('2024-03-10 13:00+00', 0)$$,
                  'the sync sends each hour''s integral');
select results_eq($$select quantity from meter.usage('tap-gt-a', 'tap.gt.gb', '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'day')$$,
                  $$values (55::numeric)$$, 'usage by day: the Σ of the hours');

select * from finish();
rollback;
