-- Billing period totals (0019_rollup_period, issue 16's fast limit check): meter.rollup_run keeps
-- meter.rollup_period and meter.rollup_period_dims equal to Σ of the hourly rows of each
-- customer's billing period (a calendar month in its billing timezone), through folds, late
-- events, cancellations (a cancelled maximum included) and a change of billing timezone;
-- meter.rollup_period_verify finds a difference and meter.rollup_period_rebuild repairs it.
-- Figures by hand.
--
-- The month edge of 2026-10-31/11-01: Europe/Paris is UTC+1 then (summer time ended on
-- 10-25), so its November starts at 2026-10-31 23:00Z and its October at 2026-09-30 22:00Z.
begin;
select plan(13);
\ir support/fixtures.sql

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
update meter.rollup_watermark set position_xid = '0', position_id = 0;

select meter.customer_upsert('tap-rp-paris', null, 'Europe/Paris'), meter.customer_upsert('tap-rp-utc'),
       meter.meter_upsert('tap.rp.calls', 'count'),
       meter.meter_upsert('tap.rp.tok', 'sum', null, null, null, null, array['model']),
       meter.meter_upsert('tap.rp.peak', 'max');

create temp view periods as
select c.external_id as customer, m.code as meter, p.period_start, p.event_count, p.quantity, p.max_value
from meter.rollup_period p join meter.customers c on c.id = p.customer_id join meter.meters m on m.id = p.meter_id
where c.external_id like 'tap-rp-%';
create temp view periods_dims as
select c.external_id as customer, m.code as meter, p.period_start, p.dims ->> 'model' as model, p.event_count, p.quantity, p.max_value
from meter.rollup_period_dims p join meter.customers c on c.id = p.customer_id join meter.meters m on m.id = p.meter_id
where c.external_id like 'tap-rp-%';

select pg_temp.put('tap-rp-paris', 'tap.rp.calls', 'c1', '2026-10-31 22:30Z');
select pg_temp.put('tap-rp-paris', 'tap.rp.calls', 'c2', '2026-10-31 23:30Z');
select pg_temp.put('tap-rp-paris', 'tap.rp.calls', 'c3', '2026-11-05 12:00Z');
select pg_temp.put('tap-rp-paris', 'tap.rp.tok', 't1', '2026-10-31 22:30Z', 10, '{"model": "big"}');
select pg_temp.put('tap-rp-paris', 'tap.rp.tok', 't2', '2026-10-31 23:30Z', 20, '{"model": "big"}');
select pg_temp.put('tap-rp-paris', 'tap.rp.tok', 't3', '2026-10-31 23:40Z', 5, '{"model": "small"}');
select pg_temp.put('tap-rp-paris', 'tap.rp.peak', 'p1', '2026-10-31 23:30Z', 4);
select pg_temp.put('tap-rp-paris', 'tap.rp.peak', 'p2', '2026-11-10 08:00Z', 9);
select pg_temp.put('tap-rp-utc', 'tap.rp.calls', 'u1', '2026-10-31 23:30Z');
select pg_temp.put('tap-rp-utc', 'tap.rp.calls', 'u2', '2026-11-01 00:30Z');
select is((select events_folded from meter.rollup_run()), 10::bigint, 'setup: ten events rolled up');

select results_eq(
    $$select customer, meter, period_start, event_count, quantity, max_value from periods
      order by customer collate "C", meter collate "C", period_start$$,
    $$values ('tap-rp-paris'::text, 'tap.rp.calls'::text, '2026-09-30 22:00Z'::timestamptz, 1::bigint, 1::numeric, 1::numeric),
             ('tap-rp-paris', 'tap.rp.calls', '2026-10-31 23:00Z', 2, 2, 1),
             ('tap-rp-paris', 'tap.rp.peak', '2026-10-31 23:00Z', 2, 13, 9),
             ('tap-rp-paris', 'tap.rp.tok', '2026-09-30 22:00Z', 1, 10, 10),
             ('tap-rp-paris', 'tap.rp.tok', '2026-10-31 23:00Z', 2, 25, 20),
             ('tap-rp-utc', 'tap.rp.calls', '2026-10-01 00:00Z', 1, 1, 1),
             ('tap-rp-utc', 'tap.rp.calls', '2026-11-01 00:00Z', 1, 1, 1)$$,
    'one row per customer, meter and billing period in the customer''s timezone: 22:30Z is Paris'' October, 23:30Z its November and UTC''s October');
select results_eq(
    $$select customer, meter, period_start, model, event_count, quantity, max_value from periods_dims
      order by period_start, model collate "C"$$,
    $$values ('tap-rp-paris'::text, 'tap.rp.tok'::text, '2026-09-30 22:00Z'::timestamptz, 'big'::text, 1::bigint, 10::numeric, 10::numeric),
             ('tap-rp-paris', 'tap.rp.tok', '2026-10-31 23:00Z', 'big', 1, 20, 20),
             ('tap-rp-paris', 'tap.rp.tok', '2026-10-31 23:00Z', 'small', 1, 5, 5)$$,
    'and per dimension values for the meter that has them');
select is_empty($$select * from meter.rollup_period_verify()$$, 'rollup_period_verify: every period row is Σ of its hours');

-- Cancellations: the period's maximum (p2, 9) and a big-model event (t2, 20) whose hour keeps t3.
select is((select pg_catalog.count(*) from meter.event_cancel(
              '[{"customer": "tap-rp-paris", "idempotency_key": "p2"}, {"customer": "tap-rp-paris", "idempotency_key": "t2"}]')
           where status = 'cancelled'), 2::bigint, 'setup: p2 and t2 cancelled');
select is((select cancellations_folded from meter.rollup_run()), 2::bigint, 'setup: the rollup subtracts both');
select results_eq(
    $$select meter, event_count, quantity, max_value from periods
      where customer = 'tap-rp-paris' and period_start = '2026-10-31 23:00Z' and meter <> 'tap.rp.calls'
      order by meter collate "C"$$,
    $$values ('tap.rp.peak'::text, 1::bigint, 4::numeric, 4::numeric), ('tap.rp.tok', 1, 5, 5)$$,
    'November after the cancellations: peak 1 event, max back to 4 (recomputed from its hours); tokens 5, max 5');

-- A late event (after the first runs, in an hour already rolled up) adds to its period.
update meter.rollup_watermark set position_xid = '150', position_id = 0;
select pg_temp.put('tap-rp-paris', 'tap.rp.tok', 't4', '2026-10-31 23:50Z', 7, '{"model": "big"}', '150');
select meter.rollup_run();
select results_eq(
    $$select model, event_count, quantity, max_value from periods_dims where period_start = '2026-10-31 23:00Z' order by model collate "C"$$,
    $$values ('big'::text, 1::bigint, 7::numeric, 7::numeric), ('small', 1, 5, 5)$$,
    'a late big-model event: November big 20 - 20 + 7 (its max 7, not the cancelled 20), small unchanged');
select is_empty($$select * from meter.rollup_period_verify()$$, 'rollup_period_verify still empty');

-- A difference is found and repaired.
update meter.rollup_period set event_count = event_count + 1
where customer_id = (select id from meter.customers where external_id = 'tap-rp-utc') and period_start = '2026-10-01 00:00Z';
select results_eq(
    $$select period_start, period_events, hourly_events from meter.rollup_period_verify()$$,
    $$values ('2026-10-01 00:00Z'::timestamptz, 2::bigint, 1::bigint)$$,
    'a period row off by one is listed with both figures');

-- A change of billing timezone rebuilds the customer's rows: UTC -> Paris puts both of u1
-- (23:30Z) and u2 in Paris' November (and repairs the row changed above).
select meter.customer_upsert('tap-rp-utc', null, 'Europe/Paris');
select results_eq(
    $$select period_start, event_count from periods where customer = 'tap-rp-utc'$$,
    $$values ('2026-10-31 23:00Z'::timestamptz, 2::bigint)$$,
    'after the timezone change: one period, Paris'' November, with both events');
select is_empty($$select * from meter.rollup_period_verify()$$, 'rollup_period_verify empty after the rebuild');

select * from finish();
rollback;
