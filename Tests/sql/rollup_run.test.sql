-- meter.rollup_run(): events are folded into meter.rollup_hourly (count, sum and max of value, for
-- every meter whatever its aggregation) and meter.rollup_hourly_unique (distinct values of a
-- unique_count meter's unique_property, with their event counts), per customer, meter and UTC hour
-- of occurred_at, whatever the session's TimeZone. A late event updates its old hour and bumps the
-- row's revision; a run with nothing new changes nothing. Events at or above the horizon (this
-- test transaction's own, uncommitted ones included) are not folded.
--
-- Emulated history. rollup_run folds only events whose xid is below the horizon, the xmin of its
-- snapshot, and this test transaction's own xid counts in that xmin: the events the test inserts
-- normally (xid = its own xid) can never be folded inside the test. Committed history is emulated
-- honestly instead: events are stored with an explicit xid below the horizon (100, 101, ...: long
-- finished transactions), as a committed transaction would have left them. When later history is
-- emulated ("committed after run 1"), the watermark is first set back to the horizon the earlier
-- run is taken to have had, and the later events get xids at or above it: a transaction with an
-- xid below a horizon a run has used can never commit new events afterwards.
-- The global figures (events folded, hours touched) assume the freshly migrated database the suite
-- runs on: the first test checks that no event was stored before.
begin;
select plan(22);

-- UTC+05:30: local hours start at half past a UTC hour, and 23:45 UTC is already the next local
-- day. Rollup hours must not move.
set local timezone = 'Asia/Kolkata';

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
select is(pg_catalog.current_setting('TimeZone'), 'Asia/Kolkata',
          'this session''s TimeZone is Asia/Kolkata, not UTC');

-- The emulated history starts at xid 100; the watermark starts before it.
update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-rr-a')                         as cust_a,
       meter.customer_upsert('tap-rr-b')                         as cust_b,
       meter.meter_upsert('tap.rr.calls')                        as m_calls,
       meter.meter_upsert('tap.rr.bytes', 'sum')                 as m_bytes,
       meter.meter_upsert('tap.rr.peak', 'max')                  as m_peak,
       meter.meter_upsert('tap.rr.users', 'unique_count', 'user') as m_users;

-- An event as the committed transaction p_xid stored it.
\ir support/fixtures.sql

-- Rollup rows of this test, by name.
create temp view rolled as
select c.external_id as customer, m.code as meter, r.hour, r.event_count, r.quantity, r.max_value, r.revision
from meter.rollup_hourly r
join meter.customers c on c.id = r.customer_id
join meter.meters m on m.id = r.meter_id
where c.external_id like 'tap-rr-%';

create temp view rolled_unique as
select c.external_id as customer, m.code as meter, u.hour, u.unique_value, u.event_count
from meter.rollup_hourly_unique u
join meter.customers c on c.id = u.customer_id
join meter.meters m on m.id = u.meter_id
where c.external_id like 'tap-rr-%';

-- ---------------------------------------------------------------------------------------------
-- Committed history: three transactions (xids 100, 101, 102), 19 events.
-- ---------------------------------------------------------------------------------------------
select pg_temp.put('tap-rr-a', 'tap.rr.calls', 'c1', '2024-03-10 10:00:00+00', 1, '{"user": "zed"}', '100');
select pg_temp.put('tap-rr-a', 'tap.rr.calls', 'c2', '2024-03-10 10:29:59.999999+00', 1, '{}', '100');
select pg_temp.put('tap-rr-a', 'tap.rr.calls', 'c3', '2024-03-10 10:30:00+00', 1, '{}', '101');
select pg_temp.put('tap-rr-a', 'tap.rr.calls', 'c4', '2024-03-10 10:59:59.999999+00', 1, '{}', '101');
select pg_temp.put('tap-rr-a', 'tap.rr.calls', 'c5', '2024-03-10 11:00:00+00', 1, '{}', '101');
select pg_temp.put('tap-rr-a', 'tap.rr.calls', 'c6', '2024-03-10 23:45:00+00', 1, '{}', '102');
select pg_temp.put('tap-rr-b', 'tap.rr.calls', 'c1', '2024-03-10 10:15:00+00', 1, '{}', '100');
select pg_temp.put('tap-rr-a', 'tap.rr.bytes', 'b1', '2024-03-10 10:05:00+00', 2.5, '{}', '100');
select pg_temp.put('tap-rr-a', 'tap.rr.bytes', 'b2', '2024-03-10 10:40:00+00', 0.000000000001, '{}', '102');
select pg_temp.put('tap-rr-a', 'tap.rr.bytes', 'b3', '2024-03-10 11:10:00+00', 7, '{}', '101');
select pg_temp.put('tap-rr-a', 'tap.rr.peak', 'p1', '2024-03-10 10:10:00+00', 3, '{}', '100');
select pg_temp.put('tap-rr-a', 'tap.rr.peak', 'p2', '2024-03-10 10:20:00+00', 9, '{}', '101');
select pg_temp.put('tap-rr-a', 'tap.rr.peak', 'p3', '2024-03-10 10:50:00+00', 4, '{}', '102');
select pg_temp.put('tap-rr-a', 'tap.rr.users', 'u1', '2024-03-10 10:01:00+00', 1, '{"user": "ann"}', '100');
select pg_temp.put('tap-rr-a', 'tap.rr.users', 'u2', '2024-03-10 10:02:00+00', 1, '{"user": "bob"}', '100');
select pg_temp.put('tap-rr-a', 'tap.rr.users', 'u3', '2024-03-10 10:03:00+00', 1, '{"user": "ann", "x": 1}', '101');
select pg_temp.put('tap-rr-a', 'tap.rr.users', 'u4', '2024-03-10 10:04:00+00', 1, '{"team": "ann"}', '101');
select pg_temp.put('tap-rr-a', 'tap.rr.users', 'u5', '2024-03-10 11:30:00+00', 1, '{"user": "ann"}', '102');
select pg_temp.put('tap-rr-a', 'tap.rr.users', 'u6', '2024-03-10 11:31:00+00', 1, '{"user": 7}', '102');

-- Not committed yet, so never folded in this test: an event of this very transaction (through
-- event_ingest, xid = our own xid) and one of a transaction that started after ours and has
-- committed (xid above ours): both sit at or above any horizon this transaction can see.
select results_eq(
    $$select status from meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
          'customer', 'tap-rr-a', 'meter', 'tap.rr.calls', 'idempotency_key', 'own',
          'occurred_at', pg_catalog.now())))$$,
    $$values ('accepted'::text)$$,
    'setup: an event of this transaction is stored (its xid is this transaction''s)');
select pg_temp.put('tap-rr-a', 'tap.rr.calls', 'later', '2024-03-10 15:00:00+00', 1, '{}',
                   (pg_catalog.pg_current_xact_id()::text::bigint + 5)::text::xid8);

-- ---------------------------------------------------------------------------------------------
-- Run 1.
-- ---------------------------------------------------------------------------------------------
create temp table run1 as select * from meter.rollup_run();

select results_eq(
    $$select ran, events_folded, cancellations_folded, hours_touched, more_pending from run1$$,
    $$values (true, 19::bigint, 0::bigint, 9::bigint, false)$$,
    'run 1 folds the 19 committed events into 9 (customer, meter, hour) rows, nothing pending');

select results_eq(
    $$select customer, meter, hour, event_count, quantity, max_value, revision from rolled
      order by customer, meter, hour$$,
    $$values ('tap-rr-a'::text, 'tap.rr.bytes'::text, '2024-03-10 10:00+00'::timestamptz, 2::bigint, 2.500000000001::numeric, 2.5::numeric, 1::bigint),
             ('tap-rr-a', 'tap.rr.bytes', '2024-03-10 11:00+00', 1, 7,  7,   1),
             ('tap-rr-a', 'tap.rr.calls', '2024-03-10 10:00+00', 4, 4,  1,   1),
             ('tap-rr-a', 'tap.rr.calls', '2024-03-10 11:00+00', 1, 1,  1,   1),
             ('tap-rr-a', 'tap.rr.calls', '2024-03-10 23:00+00', 1, 1,  1,   1),
             ('tap-rr-a', 'tap.rr.peak',  '2024-03-10 10:00+00', 3, 16, 9,   1),
             ('tap-rr-a', 'tap.rr.users', '2024-03-10 10:00+00', 4, 4,  1,   1),
             ('tap-rr-a', 'tap.rr.users', '2024-03-10 11:00+00', 2, 2,  1,   1),
             ('tap-rr-b', 'tap.rr.calls', '2024-03-10 10:00+00', 1, 1,  1,   1)$$,
    'rollup_hourly: per customer, meter and UTC hour, exact event count, sum and max for every meter '
    '(count, sum, max and unique_count alike), revision 1');

select results_eq(
    $$select customer, meter, hour, unique_value, event_count from rolled_unique
      order by customer, meter, hour, unique_value$$,
    $$values ('tap-rr-a'::text, 'tap.rr.users'::text, '2024-03-10 10:00+00'::timestamptz, 'ann'::text, 2::bigint),
             ('tap-rr-a', 'tap.rr.users', '2024-03-10 10:00+00', 'bob', 1),
             ('tap-rr-a', 'tap.rr.users', '2024-03-10 11:00+00', '7',   1),
             ('tap-rr-a', 'tap.rr.users', '2024-03-10 11:00+00', 'ann', 1)$$,
    'rollup_hourly_unique: each distinct unique_property value per hour with its event count; '
    'events without the property and meters that are not unique_count add nothing');

select is_empty(
    $$select 1 from rolled where hour <> pg_catalog.date_trunc('hour', hour, 'UTC')$$,
    'every rollup hour is a UTC hour, although the session''s local hours start at :30 UTC');

select results_eq(
    $$select hour from rolled where customer = 'tap-rr-a' and meter = 'tap.rr.calls' order by hour$$,
    $$values ('2024-03-10 10:00+00'::timestamptz), ('2024-03-10 11:00+00'), ('2024-03-10 23:00+00')$$,
    'boundaries: 10:00:00 and 10:59:59.999999 are hour 10, 11:00:00 is hour 11, and 23:45 UTC stays '
    'on March 10 (UTC), not March 11 (local)');

-- ---------------------------------------------------------------------------------------------
-- The horizon and the watermark.
-- ---------------------------------------------------------------------------------------------
select ok((select horizon_xid <= pg_catalog.pg_current_xact_id() from run1),
          'the horizon is at most this transaction''s own xid (a running transaction holds it back)');

select is_empty(
    $$select 1 from rolled where customer = 'tap-rr-a' and meter = 'tap.rr.calls'
      and hour in (pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC'), '2024-03-10 15:00+00')$$,
    'neither this transaction''s own event nor the later transaction''s event is folded');

select is((select pg_catalog.count(*) from meter.events e, run1
           where e.customer_id = (select cust_a from fx) and e.xid >= run1.horizon_xid),
          2::bigint, 'both sit at or above the run''s horizon');

select results_eq(
    $$select position_xid = horizon_xid, position_id from run1$$,
    $$values (true, 0::bigint)$$,
    'a run that was not cut short moves the watermark to (horizon, 0)');

select results_eq(
    $$select w.position_xid, w.position_id from meter.rollup_watermark w$$,
    $$select position_xid, position_id from run1$$,
    'the watermark row holds the position the run returned');

-- ---------------------------------------------------------------------------------------------
-- Late events: committed after run 1, for hours already rolled up.
-- Emulation: run 1 is taken to have run at horizon 200 (transactions 200 and later still
-- running); the watermark is set back to where that run would have left it, and transactions 200
-- and 201 commit events afterwards.
-- ---------------------------------------------------------------------------------------------
update meter.rollup_watermark set position_xid = '200', position_id = 0;

select pg_temp.put('tap-rr-a', 'tap.rr.calls', 'late-c', '2024-03-10 10:15:00+00', 1, '{}', '200');
select pg_temp.put('tap-rr-a', 'tap.rr.peak', 'late-p', '2024-03-10 10:30:00+00', 12, '{}', '200');
select pg_temp.put('tap-rr-a', 'tap.rr.users', 'late-u1', '2024-03-10 10:45:00+00', 1, '{"user": "cy"}', '200');
select pg_temp.put('tap-rr-a', 'tap.rr.users', 'late-u2', '2024-03-10 10:46:00+00', 1, '{"user": "ann"}', '201');
select pg_temp.put('tap-rr-a', 'tap.rr.bytes', 'late-b', '2024-03-09 08:00:00+00', 1, '{}', '201');

create temp table before_run2 as select * from rolled;

create temp table run2 as select * from meter.rollup_run();

select results_eq(
    $$select ran, events_folded, cancellations_folded, hours_touched, more_pending from run2$$,
    $$values (true, 5::bigint, 0::bigint, 4::bigint, false)$$,
    'run 2 folds exactly the 5 late events, into 4 hours');

select results_eq(
    $$select customer, meter, hour, event_count, quantity, max_value, revision from rolled
      except select * from before_run2
      order by meter, hour$$,
    $$values ('tap-rr-a'::text, 'tap.rr.bytes'::text, '2024-03-09 08:00+00'::timestamptz, 1::bigint, 1::numeric, 1::numeric, 1::bigint),
             ('tap-rr-a', 'tap.rr.calls', '2024-03-10 10:00+00', 5, 5,  1,  2),
             ('tap-rr-a', 'tap.rr.peak',  '2024-03-10 10:00+00', 4, 28, 12, 2),
             ('tap-rr-a', 'tap.rr.users', '2024-03-10 10:00+00', 6, 6,  1,  2)$$,
    'late events update their old hours (count, sum, a new max) and bump the revision to 2; '
    'an older hour without a row gets one at revision 1');

select is((select pg_catalog.count(*) from before_run2 b join rolled r using (customer, meter, hour)
           where r is not distinct from b), 6::bigint,
          'the six hours without late events are untouched (still revision 1)');

select results_eq(
    $$select unique_value, event_count from rolled_unique
      where meter = 'tap.rr.users' and hour = '2024-03-10 10:00+00' order by unique_value$$,
    $$values ('ann'::text, 3::bigint), ('bob', 1), ('cy', 1)$$,
    'a late event adds to its value''s count, or adds a new value');

-- ---------------------------------------------------------------------------------------------
-- Nothing new: a run changes nothing.
-- ---------------------------------------------------------------------------------------------
create temp table before_run3 as select * from rolled;
create temp table before_run3_unique as select * from rolled_unique;
create temp table run3 as select * from meter.rollup_run();

select results_eq(
    $$select ran, events_folded, cancellations_folded, hours_touched, more_pending from run3$$,
    $$values (true, 0::bigint, 0::bigint, 0::bigint, false)$$,
    'a run with nothing new folds nothing');

select results_eq(
    $$select * from rolled order by customer, meter, hour$$,
    $$select * from before_run3 order by customer, meter, hour$$,
    'and changes no rollup row (no revision bump either)');

select results_eq(
    $$select * from rolled_unique order by customer, meter, hour, unique_value$$,
    $$select * from before_run3_unique order by customer, meter, hour, unique_value$$,
    'nor any unique-value row');

-- ---------------------------------------------------------------------------------------------
-- Function properties.
-- ---------------------------------------------------------------------------------------------
select volatility_is('meter', 'rollup_run', array['integer', 'integer']::name[], 'volatile',
                     'rollup_run is VOLATILE (each statement takes a fresh snapshot)');
select isnt_definer('meter', 'rollup_run', array['integer', 'integer']::name[],
                    'rollup_run runs with its caller''s rights (operators and the rollup worker only)');

select * from finish();
rollback;
