-- A time-weighted gauge with dimensions (issue 15: "each value held from its occurred_at until the
-- next event for the same customer, meter and dimension values"): one series per combination of
-- values (meter._gauge_dims_hours), each hour's integral its rollup_hourly_dims row, the hour's
-- total their sum; late events and cancellations re-derive exactly the affected combination;
-- rollup_verify recomputes both; meter.usage groups it; a plan prices it per filter, and the
-- close and the reconciliation agree. Every figure is worked out by hand in its comment.
--
-- Emulated history as in rollup_run.test.sql (xid 100, then 101 for late events).
begin;
select plan(15);
\ir support/fixtures.sql
\ir support/close_reference.sql

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-gd-a') as cust,
       meter.meter_upsert('tap.gd.disk', 'time_weighted_sum', null, null, null, null, array['region']) as m_disk,
       meter.plan_upsert('tap-gd-plan', 'usd') as plan;
select meter.customer_subscribe('tap-gd-a', 'tap-gd-plan', '2024-03');
select lives_ok($$select meter.plan_price_set('tap-gd-plan', 'tap.gd.disk', 'per_unit', 2, null, null, '{"region": "eu"}')$$,
                'a time-weighted gauge with dimensions can be priced per filter');
select meter.plan_price_set('tap-gd-plan', 'tap.gd.disk', 'per_unit', 1);

-- eu: 10 from 10:00, 0 from 12:00. us: 4 from 10:30, 0 from 11:30. No region: 6 from 11:00, 0
-- from 11:15. Each holds until the next event of its own region, whatever the others do.
select pg_temp.put('tap-gd-a', 'tap.gd.disk', 'e1', '2024-03-10 10:00+00', 10, '{"region": "eu"}');
select pg_temp.put('tap-gd-a', 'tap.gd.disk', 'e2', '2024-03-10 10:30+00', 4, '{"region": "us"}');
select pg_temp.put('tap-gd-a', 'tap.gd.disk', 'e3', '2024-03-10 12:00+00', 0, '{"region": "eu"}');
select pg_temp.put('tap-gd-a', 'tap.gd.disk', 'e4', '2024-03-10 11:30+00', 0, '{"region": "us"}');
select pg_temp.put('tap-gd-a', 'tap.gd.disk', 'e5', '2024-03-10 11:00+00', 6, '{}');
select pg_temp.put('tap-gd-a', 'tap.gd.disk', 'e6', '2024-03-10 11:15+00', 0, '{}');

create temp view dims as
select x.hour, x.dims ->> 'region' as region, x.event_count, x.quantity
from meter.rollup_hourly_dims x where x.meter_id = (select m_disk from fx);
create temp view hours as
select r.hour, r.event_count, r.quantity from meter.rollup_hourly r where r.meter_id = (select m_disk from fx);

select is((select events_folded from meter.rollup_run()), 6::bigint, 'six events folded');
select results_eq(
    $$select hour, region, event_count, quantity from dims where event_count <> 0 or quantity <> 0
      order by hour, region collate "C" nulls first$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, 'eu'::text, 1::bigint, 10::numeric),  -- 10 x 1
             ('2024-03-10 10:00+00', 'us', 1, 2),                                       -- 4 x 0.5
             ('2024-03-10 11:00+00', null, 2, 1.5),                                     -- 6 x 0.25
             ('2024-03-10 11:00+00', 'eu', 0, 10),                                      -- 10 held, no event
             ('2024-03-10 11:00+00', 'us', 1, 2),                                       -- 4 x 0.5
             ('2024-03-10 12:00+00', 'eu', 1, 0)$$,
    'one series per region: each integrates its own values, held until the next event of its region');
select results_eq($$select hour, event_count, quantity from hours order by hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 2::bigint, 12::numeric),
                           ('2024-03-10 11:00+00', 3, 13.5),
                           ('2024-03-10 12:00+00', 1, 0)$$,
                  'the hour''s total is the sum of its regions (10 + 2; 1.5 + 10 + 2)');
select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'rollup_verify recomputes the series per region: no difference');

-- Late (xid 101): e7 eu = 20 at 11:00 (eu hour 11: 20). Then e2 (us 4 at 10:30) is cancelled: us
-- holds nothing until e4 (0), so both us hours go to 0. Totals: 10 + 0 = 10; 1.5 + 20 + 0 = 21.5.
select pg_temp.put('tap-gd-a', 'tap.gd.disk', 'e7', '2024-03-10 11:00+00', 20, '{"region": "eu"}', '101');
update meter.rollup_watermark set position_xid = '101', position_id = 0;
select results_eq($$select status from meter.event_cancel('[{"customer": "tap-gd-a", "idempotency_key": "e2"}]')$$,
                  $$values ('cancelled'::text)$$, 'setup: e2 is cancelled');
select results_eq($$select events_folded, cancellations_folded from meter.rollup_run()$$,
                  $$values (1::bigint, 1::bigint)$$, 'the late event and the cancellation are rolled up');
select results_eq(
    $$select hour, region, event_count, quantity from dims where event_count <> 0 or quantity <> 0
      order by hour, region collate "C" nulls first$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, 'eu'::text, 1::bigint, 10::numeric),
             ('2024-03-10 11:00+00', null, 2, 1.5),
             ('2024-03-10 11:00+00', 'eu', 1, 20),
             ('2024-03-10 11:00+00', 'us', 1, 0),
             ('2024-03-10 12:00+00', 'eu', 1, 0)$$,
    'the late event re-derives eu from its hour; the cancellation re-derives us: only their regions move');
select results_eq($$select hour, quantity from hours order by hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 10::numeric), ('2024-03-10 11:00+00', 21.5), ('2024-03-10 12:00+00', 0)$$,
                  'the totals follow');
select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'rollup_verify: still no difference');
select results_eq(
    $$select dimensions ->> 'region', quantity::numeric from meter.usage('tap-gd-a', 'tap.gd.disk', '2024-03-10 00:00+00',
                                                                     '2024-03-11 00:00+00', 'day', array['region'])
      order by dimensions ->> 'region' collate "C" nulls first$$,
    $$values (null::text, 1.5::numeric), ('eu', 30), ('us', 0)$$,
    'meter.usage groups the gauge by region: each region''s GB-hours (eu 10 + 20)');

-- The close: eu 30 GB-hours x 2 = 60; the rest 1.5 x 1 = 1.5, rounded half away from zero: 2.
select pg_temp.ref_expect('2024-03', 'tap-gd-a');
select results_eq($$select outcome, total from meter.period_close('2024-03', 'tap-gd-a')$$,
                  $$values ('closed'::text, 62::bigint)$$, 'the March invoice: 60 + 2');
select is_empty($$select * from pg_temp.ref_differences(pg_temp.invoices_of('tap-gd-a', '2024-03'))$$,
                'gauges with dimensions, 2024-03: the set-based close wrote exactly the lines of the per-customer pricing (support/close_reference.sql)');
select results_eq(
    $$select r.line, r.raw_events, r.raw_quantity::numeric, r.invoiced_quantity::numeric, r.invoiced_amount::bigint, r.status
      from meter.reconciliation r where r.customer = 'tap-gd-a' order by r.line collate "C"$$,
    $$values ('tap.gd.disk [other]'::text, 3::bigint, 1.5::numeric, 1.5::numeric, 2::bigint, 'MATCH'::text),
             ('tap.gd.disk [region=eu]', 3, 30, 30, 60, 'MATCH')$$,
    'a line per priced filter, its raw figure integrated from raw events per region: MATCH');

select * from finish();
rollback;
