-- The latest aggregation (0013_gauge_latest, issue 15): a gauge whose period quantity is the value
-- of the period's last event, by occurred_at, ties broken by the greatest idempotency key (byte
-- order), so arrival order never matters. rollup_run keeps each hour's last event and merges a
-- later batch into it; a cancellation recomputes the hour's last event from raw events;
-- rollup_verify recomputes it; _period_usage, usage and the reconciliation's raw figure read it;
-- the billing sync sends each hour the running last value of its UTC month (an hour whose events
-- were all cancelled carries the value before it), so an engine's "last" stays right.
--
-- Emulated history as in rollup_run.test.sql (xid 100, then 101 for late events).
begin;
select plan(14);
\ir support/fixtures.sql

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-gl-a') as cust,
       meter.meter_upsert('tap.gl.seats', 'latest') as m_seats;

select pg_temp.put('tap-gl-a', 'tap.gl.seats', 's1', '2024-03-10 10:05+00', 5);
select pg_temp.put('tap-gl-a', 'tap.gl.seats', 's3', '2024-03-10 10:50+00', 6);
select pg_temp.put('tap-gl-a', 'tap.gl.seats', 's4', '2024-03-10 11:10+00', 3);

create temp view hours as
select r.hour, r.event_count, r.latest_at, r.latest_key, r.latest_value
from meter.rollup_hourly r where r.meter_id = (select m_seats from fx);

select is((select events_folded from meter.rollup_run()), 3::bigint, 'three events folded');
select results_eq($$select hour, latest_key, latest_value from hours order by hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 's3'::text, 6::numeric), ('2024-03-10 11:00+00', 's4', 3)$$,
                  'each hour keeps its last event');

-- Late events: s2 at the same instant as s3 with a smaller key (s3 stays), then s5 later in the hour.
update meter.rollup_watermark set position_xid = '101', position_id = 0;
select pg_temp.put('tap-gl-a', 'tap.gl.seats', 's2', '2024-03-10 10:50+00', 7, '{}', '101');
select pg_temp.put('tap-gl-a', 'tap.gl.seats', 's5', '2024-03-10 10:55+00', 9, '{}', '101');
select is((select events_folded from meter.rollup_run()), 2::bigint, 'two late events folded');
select results_eq($$select latest_key, latest_value from hours where hour = '2024-03-10 10:00+00'$$,
                  $$values ('s5'::text, 9::numeric)$$,
                  'a tie at 10:50 keeps the greater key (s3 over s2, whatever the arrival order); s5 at 10:55 is later');
select results_eq($$select quantity, event_count from meter._period_usage((select cust from fx), (select m_seats from fx),
                                                                         '2024-03-01 00:00+00', '2024-04-01 00:00+00')$$,
                  $$values (3::numeric, 5::bigint)$$, 'the period''s latest is its last event: s4 at 11:10 (3)');

-- Billing: usage records, one item; each hour carries the running last value of its month.
select meter.billing_price_set('tap.gl.seats', 'price_gl');
select meter.billing_link_record((select cust from fx), null, 'cus_tap_gl', null, null, null);
select meter.billing_link_record((select cust from fx), (select m_seats from fx), 'cus_tap_gl', 'sub_tap_gl', 'si_tap_gl', 'price_gl');

select meter.event_cancel('[{"customer": "tap-gl-a", "idempotency_key": "s4"}]');
select is((select cancellations_folded from meter.rollup_run()), 1::bigint, 'the cancellation of s4 is folded');
select results_eq($$select event_count, latest_key, latest_value from hours where hour = '2024-03-10 11:00+00'$$,
                  $$values (0::bigint, null::text, null::numeric)$$, '11:00 has no event left: no last event');
select is((select quantity from meter._period_usage((select cust from fx), (select m_seats from fx),
                                                   '2024-03-01 00:00+00', '2024-04-01 00:00+00')),
          9::numeric, 'the period''s latest falls back to 10:55 (s5, 9)');
create temp table claim1 as select * from meter.sync_claim('tap-gl-worker');
select results_eq($$select hour, quantity from claim1 order by hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 9::numeric), ('2024-03-10 11:00+00', 9)$$,
                  'the sync sends each hour the running last value of its month: 11:00 carries 10:55''s 9');

select meter.event_cancel('[{"customer": "tap-gl-a", "idempotency_key": "s5"}]');
select meter.rollup_run();
select results_eq($$select latest_key, latest_value from hours where hour = '2024-03-10 10:00+00'$$,
                  $$values ('s3'::text, 6::numeric)$$, 'a cancelled last event: the hour''s last is recomputed from raw events (s3)');
select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'rollup_verify recomputes the last events: no difference');
update meter.rollup_hourly set latest_value = 1 where meter_id = (select m_seats from fx) and hour = '2024-03-10 10:00+00';
select results_eq($$select hour, rollup_latest, raw_latest from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 1::numeric, 6::numeric)$$,
                  '... and names an hour whose last value was tampered with');
update meter.rollup_hourly set latest_value = 6 where meter_id = (select m_seats from fx) and hour = '2024-03-10 10:00+00';
select results_eq($$select quantity from meter.usage('tap-gl-a', 'tap.gl.seats', '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'day')$$,
                  $$values (6::numeric)$$, 'usage by day: the day''s last value');

select * from finish();
rollback;
