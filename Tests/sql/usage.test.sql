-- meter.usage(customer, meter, from, to, granularity): usage per UTC bucket (hour, day, month) from
-- the hourly rollups, with the aggregation of the meter version in force at each hour (count, sum,
-- max, exact unique_count within the bucket); a bucket that spans a version change is split, a
-- bucket cut by from or to is clipped (bucket_start/bucket_end are the row's actual interval);
-- only buckets with rollup rows appear, and events not rolled up are not counted. Argument errors:
-- 22023 (granularity, from/to order and alignment), P0002 (unknown customer or meter).
-- The session runs in America/Los_Angeles (whose DST starts on 2024-03-10): buckets stay UTC.
--
-- Emulated history (see rollup_run.test.sql): events get explicit xids of finished transactions
-- below the horizon, and the meter version change of tap.us.switch on 2024-03-10 12:00 UTC is
-- written directly into meter.meter_versions, as meter.meter_upsert would have scheduled it before
-- that hour (meter_upsert only accepts future hours, so past history cannot be made through it).
-- The suite runs on a freshly migrated database (checked first).
begin;
select plan(33);

set local timezone = 'America/Los_Angeles';

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');

update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-us-a')                          as cust_a,
       meter.customer_upsert('tap-us-b')                          as cust_b,
       meter.customer_upsert('tap-us-idle')                       as cust_idle,
       meter.meter_upsert('tap.us.calls')                         as m_calls,
       meter.meter_upsert('tap.us.bytes', 'sum')                  as m_bytes,
       meter.meter_upsert('tap.us.peak', 'max')                   as m_peak,
       meter.meter_upsert('tap.us.users', 'unique_count', 'user') as m_users,
       meter.meter_upsert('tap.us.switch', 'count')               as m_switch;

insert into meter.meter_versions (meter_id, version, aggregation, unique_property, effective_from, created_at)
values ((select m_switch from fx), 2, 'sum', null, '2024-03-10 12:00+00', '2024-03-10 09:12+00');

\ir support/fixtures.sql

select pg_temp.put('tap-us-a', 'tap.us.calls', 'c1', '2024-03-10 10:15+00');
select pg_temp.put('tap-us-a', 'tap.us.calls', 'c2', '2024-03-10 10:45+00');
select pg_temp.put('tap-us-a', 'tap.us.calls', 'c3', '2024-03-10 11:05+00');
select pg_temp.put('tap-us-a', 'tap.us.calls', 'c4', '2024-03-11 09:00+00');
select pg_temp.put('tap-us-a', 'tap.us.calls', 'c5', '2024-04-02 00:30+00');
select pg_temp.put('tap-us-b', 'tap.us.calls', 'c1', '2024-03-10 10:30+00');
select pg_temp.put('tap-us-a', 'tap.us.bytes', 'b1', '2024-03-10 10:10+00', 1.5);
select pg_temp.put('tap-us-a', 'tap.us.bytes', 'b2', '2024-03-10 11:20+00', 2.25);
select pg_temp.put('tap-us-a', 'tap.us.bytes', 'b3', '2024-03-11 00:00+00', 10);
select pg_temp.put('tap-us-a', 'tap.us.peak',  'p1', '2024-03-10 10:00+00', 4);
select pg_temp.put('tap-us-a', 'tap.us.peak',  'p2', '2024-03-10 11:00+00', 9);
select pg_temp.put('tap-us-a', 'tap.us.peak',  'p3', '2024-03-10 11:30+00', 2);
select pg_temp.put('tap-us-a', 'tap.us.peak',  'p4', '2024-03-11 23:59:59.999999+00', 3);
select pg_temp.put('tap-us-a', 'tap.us.users', 'u1', '2024-03-10 10:00+00', 1, '{"user": "ann"}');
select pg_temp.put('tap-us-a', 'tap.us.users', 'u2', '2024-03-10 10:30+00', 1, '{"user": "bob"}');
select pg_temp.put('tap-us-a', 'tap.us.users', 'u3', '2024-03-10 11:00+00', 1, '{"user": "ann"}');
select pg_temp.put('tap-us-a', 'tap.us.users', 'u4', '2024-03-10 11:10+00', 1, '{}');
select pg_temp.put('tap-us-a', 'tap.us.users', 'u5', '2024-03-11 08:00+00', 1, '{"user": "cy"}');
select pg_temp.put('tap-us-a', 'tap.us.users', 'u6', '2024-03-11 09:00+00', 1, '{"user": "ann"}');
select pg_temp.put('tap-us-a', 'tap.us.users', 'u7', '2024-03-12 07:00+00', 1, '{"user": "dan"}');
select pg_temp.put('tap-us-a', 'tap.us.switch', 's1', '2024-03-10 10:00+00', 5);
select pg_temp.put('tap-us-a', 'tap.us.switch', 's2', '2024-03-10 11:00+00', 6);
select pg_temp.put('tap-us-a', 'tap.us.switch', 's3', '2024-03-10 12:00+00', 7);
select pg_temp.put('tap-us-a', 'tap.us.switch', 's4', '2024-03-10 13:00+00', 8);
select pg_temp.put('tap-us-a', 'tap.us.switch', 's5', '2024-03-11 01:00+00', 1);

create temp table run1 as select * from meter.rollup_run();
-- dan's only event is cancelled after the rollup, and subtracted by the next run.
select meter.event_cancel('[{"customer": "tap-us-a", "idempotency_key": "u7"}]');
create temp table run2 as select * from meter.rollup_run();

select results_eq($$select (select events_folded from run1), (select cancellations_folded from run2)$$,
                  $$values (25::bigint, 1::bigint)$$, 'setup: 25 events rolled up, one cancellation subtracted');

-- An event of this transaction: not rolled up, so not in usage.
select meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
    'customer', 'tap-us-a', 'meter', 'tap.us.calls', 'idempotency_key', 'own', 'occurred_at', pg_catalog.now())));

-- ---------------------------------------------------------------------------------------------
-- count, per hour, day and month.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select customer, meter, bucket_start, bucket_end, meter_version, aggregation, quantity, event_count
      from meter.usage('tap-us-a', 'tap.us.calls', '2024-03-10 00:00+00', '2024-03-12 00:00+00', 'hour')$$,
    $$values ('tap-us-a'::text, 'tap.us.calls'::text, '2024-03-10 10:00+00'::timestamptz, '2024-03-10 11:00+00'::timestamptz, 1, 'count'::text, 2::numeric, 2::bigint),
             ('tap-us-a', 'tap.us.calls', '2024-03-10 11:00+00', '2024-03-10 12:00+00', 1, 'count', 1, 1),
             ('tap-us-a', 'tap.us.calls', '2024-03-11 09:00+00', '2024-03-11 10:00+00', 1, 'count', 1, 1)$$,
    'count per hour: one row per UTC hour with rolled-up events (sparse), in order');

select results_eq(
    $$select bucket_start, bucket_end, quantity, event_count
      from meter.usage('tap-us-a', 'tap.us.calls', '2024-03-10 00:00+00', '2024-03-12 00:00+00', 'day')$$,
    $$values ('2024-03-10 00:00+00'::timestamptz, '2024-03-11 00:00+00'::timestamptz, 3::numeric, 3::bigint),
             ('2024-03-11 00:00+00', '2024-03-12 00:00+00', 1, 1)$$,
    'count per day: UTC days, not the session''s local days');

select results_eq(
    $$select bucket_start, bucket_end, quantity, event_count
      from meter.usage('tap-us-a', 'tap.us.calls', '2024-03-01 00:00+00', '2024-05-01 00:00+00', 'month')$$,
    $$values ('2024-03-01 00:00+00'::timestamptz, '2024-04-01 00:00+00'::timestamptz, 4::numeric, 4::bigint),
             ('2024-04-01 00:00+00', '2024-05-01 00:00+00', 1, 1)$$,
    'count per month: UTC calendar months');

select results_eq(
    $$select bucket_start, bucket_end, quantity
      from meter.usage('tap-us-b', 'tap.us.calls', '2024-03-01 00:00+00', '2024-05-01 00:00+00', 'month')$$,
    $$values ('2024-03-01 00:00+00'::timestamptz, '2024-04-01 00:00+00'::timestamptz, 1::numeric)$$,
    'each customer sees its own usage only');

-- ---------------------------------------------------------------------------------------------
-- sum, max, unique_count.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select bucket_start, aggregation, quantity, event_count
      from meter.usage('tap-us-a', 'tap.us.bytes', '2024-03-10 00:00+00', '2024-03-12 00:00+00', 'day')$$,
    $$values ('2024-03-10 00:00+00'::timestamptz, 'sum'::text, 3.75::numeric, 2::bigint),
             ('2024-03-11 00:00+00', 'sum', 10, 1)$$,
    'sum per day: the exact sum of value');

select results_eq(
    $$select bucket_start, aggregation, quantity, event_count
      from meter.usage('tap-us-a', 'tap.us.peak', '2024-03-10 00:00+00', '2024-03-12 00:00+00', 'hour')$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, 'max'::text, 4::numeric, 1::bigint),
             ('2024-03-10 11:00+00', 'max', 9, 2),
             ('2024-03-11 23:00+00', 'max', 3, 1)$$,
    'max per hour: the largest value of the hour');

select results_eq(
    $$select bucket_start, quantity, event_count
      from meter.usage('tap-us-a', 'tap.us.peak', '2024-03-10 00:00+00', '2024-03-12 00:00+00', 'day')$$,
    $$values ('2024-03-10 00:00+00'::timestamptz, 9::numeric, 3::bigint), ('2024-03-11 00:00+00', 3, 1)$$,
    'max per day: the largest value over the day''s hours');

select results_eq(
    $$select bucket_start, aggregation, quantity, event_count
      from meter.usage('tap-us-a', 'tap.us.users', '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'hour')$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, 'unique_count'::text, 2::numeric, 2::bigint),
             ('2024-03-10 11:00+00', 'unique_count', 1, 2)$$,
    'unique_count per hour: distinct values (an event without the property counts as an event, not a value)');

select results_eq(
    $$select bucket_start, quantity, event_count
      from meter.usage('tap-us-a', 'tap.us.users', '2024-03-10 00:00+00', '2024-03-13 00:00+00', 'day')$$,
    $$values ('2024-03-10 00:00+00'::timestamptz, 2::numeric, 4::bigint),
             ('2024-03-11 00:00+00', 2, 2),
             ('2024-03-12 00:00+00', 0, 0)$$,
    'unique_count per day: ann counted once although she appears in two hours; dan''s only event '
    'was cancelled, so his day has a row with no value left');

select results_eq(
    $$select bucket_start, bucket_end, quantity, event_count
      from meter.usage('tap-us-a', 'tap.us.users', '2024-03-01 00:00+00', '2024-04-01 00:00+00', 'month')$$,
    $$values ('2024-03-01 00:00+00'::timestamptz, '2024-04-01 00:00+00'::timestamptz, 3::numeric, 6::bigint)$$,
    'unique_count per month: ann, bob and cy, each once (exact distinct over the month)');

-- ---------------------------------------------------------------------------------------------
-- A meter version change (count -> sum at 2024-03-10 12:00 UTC) splits the buckets around it.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select bucket_start, bucket_end, meter_version, aggregation, quantity, event_count
      from meter.usage('tap-us-a', 'tap.us.switch', '2024-03-10 00:00+00', '2024-03-12 00:00+00', 'day')$$,
    $$values ('2024-03-10 00:00+00'::timestamptz, '2024-03-10 12:00+00'::timestamptz, 1, 'count'::text, 2::numeric, 2::bigint),
             ('2024-03-10 12:00+00', '2024-03-11 00:00+00', 2, 'sum', 15, 2),
             ('2024-03-11 00:00+00', '2024-03-12 00:00+00', 2, 'sum', 1, 1)$$,
    'per day: the day of the change is split in one row per version, each with its aggregation');

select results_eq(
    $$select bucket_start, bucket_end, meter_version, aggregation, quantity, event_count
      from meter.usage('tap-us-a', 'tap.us.switch', '2024-03-01 00:00+00', '2024-04-01 00:00+00', 'month')$$,
    $$values ('2024-03-01 00:00+00'::timestamptz, '2024-03-10 12:00+00'::timestamptz, 1, 'count'::text, 2::numeric, 2::bigint),
             ('2024-03-10 12:00+00', '2024-04-01 00:00+00', 2, 'sum', 16, 3)$$,
    'per month: likewise');

select results_eq(
    $$select bucket_start, bucket_end, meter_version, quantity
      from meter.usage('tap-us-a', 'tap.us.switch', '2024-03-10 11:00+00', '2024-03-10 13:00+00', 'hour')$$,
    $$values ('2024-03-10 11:00+00'::timestamptz, '2024-03-10 12:00+00'::timestamptz, 1, 1::numeric),
             ('2024-03-10 12:00+00', '2024-03-10 13:00+00', 2, 7)$$,
    'per hour: each hour has exactly one version');

-- ---------------------------------------------------------------------------------------------
-- Clipping by from and to; every meter at once.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select bucket_start, bucket_end, quantity
      from meter.usage('tap-us-a', 'tap.us.calls', '2024-03-10 11:00+00', '2024-03-11 10:00+00', 'day')$$,
    $$values ('2024-03-10 11:00+00'::timestamptz, '2024-03-11 00:00+00'::timestamptz, 1::numeric),
             ('2024-03-11 00:00+00', '2024-03-11 10:00+00', 1)$$,
    'day buckets clipped by from and to: only the hours inside [from, to) count, and the rows say so');

select results_eq(
    $$select bucket_start, bucket_end, quantity
      from meter.usage('tap-us-a', 'tap.us.users', '2024-03-10 10:00+00', '2024-03-31 00:00+00', 'month')$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, '2024-03-31 00:00+00'::timestamptz, 3::numeric)$$,
    'a month bucket clipped on both sides');

select results_eq(
    $$select bucket_start, bucket_end, quantity
      from meter.usage('tap-us-a', 'tap.us.users', '2024-03-10 11:00+00', '2024-03-11 09:00+00', 'month')$$,
    $$values ('2024-03-10 11:00+00'::timestamptz, '2024-03-11 09:00+00'::timestamptz, 2::numeric)$$,
    'unique_count of a clipped bucket counts only the values inside it (ann, cy; not bob)');

select results_eq(
    $$select meter, bucket_start, bucket_end, meter_version, quantity, event_count
      from meter.usage('tap-us-a', null, '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'day')$$,
    $$values ('tap.us.bytes'::text, '2024-03-10 00:00+00'::timestamptz, '2024-03-11 00:00+00'::timestamptz, 1, 3.75::numeric, 2::bigint),
             ('tap.us.calls',  '2024-03-10 00:00+00', '2024-03-11 00:00+00', 1, 3,    3),
             ('tap.us.peak',   '2024-03-10 00:00+00', '2024-03-11 00:00+00', 1, 9,    3),
             ('tap.us.switch', '2024-03-10 00:00+00', '2024-03-10 12:00+00', 1, 2,    2),
             ('tap.us.switch', '2024-03-10 12:00+00', '2024-03-11 00:00+00', 2, 15,   2),
             ('tap.us.users',  '2024-03-10 00:00+00', '2024-03-11 00:00+00', 1, 2,    4)$$,
    'meter null: every meter of the customer, by code then bucket');

select is_empty(
    $$select * from meter.usage('tap-us-idle', null, '2024-01-01 00:00+00', '2025-01-01 00:00+00', 'month')$$,
    'a customer without rollups has no usage rows');

select is_empty(
    $$select * from meter.usage('tap-us-a', 'tap.us.calls', pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC'),
                                pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC') + interval '1 hour', 'hour')$$,
    'an event not rolled up yet (this transaction''s own) is not counted');

-- ---------------------------------------------------------------------------------------------
-- Errors.
-- ---------------------------------------------------------------------------------------------
select throws_ok($$select * from meter.usage('tap-us-a', null, '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'week')$$,
                 '22023', 'granularity must be hour, day or month, got week', 'granularity week raises 22023');
select throws_ok($$select * from meter.usage('tap-us-a', null, '2024-03-10 00:00+00', '2024-03-11 00:00+00', null)$$,
                 '22023', 'granularity must be hour, day or month, got null', 'granularity null raises 22023');
select throws_ok($$select * from meter.usage('tap-us-a', null, '2024-03-10 00:00+00', '2024-03-10 00:00+00', 'hour')$$,
                 '22023', 'from must be before to', 'from = to raises 22023');
select throws_ok($$select * from meter.usage('tap-us-a', null, '2024-03-11 00:00+00', '2024-03-10 00:00+00', 'hour')$$,
                 '22023', 'from must be before to', 'from after to raises 22023');
select throws_ok($$select * from meter.usage('tap-us-a', null, null, '2024-03-10 00:00+00', 'hour')$$,
                 '22023', 'from must be before to', 'a null from raises 22023');
select throws_ok($$select * from meter.usage('tap-us-a', null, '2024-03-10 00:30+00', '2024-03-11 00:00+00', 'hour')$$,
                 '22023', 'from and to must lie on UTC hour boundaries', 'a from off the hour raises 22023');
select throws_ok($$select * from meter.usage('tap-us-a', null, '2024-03-10 00:00+00', '2024-03-11 00:00:00.000001+00', 'day')$$,
                 '22023', 'from and to must lie on UTC hour boundaries', 'a to off the hour raises 22023');
select throws_ok($$select * from meter.usage('tap-us-a', null, '2024-03-10 10:00+05:30', '2024-03-11 10:00+05:30', 'day')$$,
                 '22023', 'from and to must lie on UTC hour boundaries',
                 'a whole hour of a +05:30 zone is not a UTC hour: 22023');
select throws_ok($$select * from meter.usage('tap-us-nobody', null, '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'hour')$$,
                 'P0002', 'no customer with external id ''tap-us-nobody''', 'an unknown customer raises P0002');
select throws_ok($$select * from meter.usage('tap-us-a', 'tap.us.nometer', '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'hour')$$,
                 'P0002', 'no meter with code ''tap.us.nometer''', 'an unknown meter raises P0002');

-- ---------------------------------------------------------------------------------------------
-- Function properties.
-- ---------------------------------------------------------------------------------------------
select volatility_is('meter', 'usage',
                     array['text', 'text', 'timestamp with time zone', 'timestamp with time zone', 'text', 'text[]', 'jsonb']::name[],
                     'stable', 'usage is STABLE');
select is_definer('meter', 'usage',
                  array['text', 'text', 'timestamp with time zone', 'timestamp with time zone', 'text', 'text[]', 'jsonb']::name[],
                  'usage is SECURITY DEFINER (the ingest and analyst roles read no table themselves)');

select * from finish();
rollback;
