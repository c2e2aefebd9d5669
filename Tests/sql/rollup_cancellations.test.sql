-- Cancellations in the rollup (meter.rollup_run()): a cancellation is subtracted exactly once and
-- only once its event has been folded.
--   * cancelled before the rollup: event and cancellation are folded by the same run, net zero
--     (the hour's row stays, with zeros);
--   * cancelled after the rollup: subtracted once by the next run (rolled_up_at set), never again;
--   * the max of an hour that lost its largest event is recomputed from the remaining events,
--     including events folded by the same run;
--   * a unique_count event's cancellation decrements its value's count;
--   * a cancellation whose event is not folded yet (still above the horizon, or past the end of a
--     run cut short by max_events) waits for it.
-- The session runs with DateStyle SQL, DMY and a non-UTC, non-whole-hour time zone: the rollup
-- must not depend on either (it once broke on DateStyle SQL whenever a cancellation was due).
--
-- Emulated history (see rollup_run.test.sql): events get explicit xids of finished transactions;
-- for events "committed after a run", the watermark is first set back to the horizon that run is
-- taken to have had. The suite runs on a freshly migrated database (checked first).
begin;
select plan(26);

set local datestyle = 'SQL, DMY';
set local timezone = 'America/St_Johns';

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');

update meter.rollup_watermark set position_xid = '0', position_id = 0;
create temp table wm0 as select * from meter.rollup_watermark;

create temp table fx as
select meter.customer_upsert('tap-rc-a')                          as cust,
       meter.meter_upsert('tap.rc.calls')                         as m_calls,
       meter.meter_upsert('tap.rc.bytes', 'sum')                  as m_bytes,
       meter.meter_upsert('tap.rc.peak', 'max')                   as m_peak,
       meter.meter_upsert('tap.rc.users', 'unique_count', 'user') as m_users;

\ir support/fixtures.sql
create function pg_temp.event(p_meter text, p_key text, p_occurred_at timestamptz, p_value numeric,
                               p_properties jsonb, p_xid xid8)
returns bigint language sql
as $$ select pg_temp.put('tap-rc-a', p_meter, p_key, p_occurred_at, p_value, p_properties, p_xid) $$;

-- Cancel one event of tap-rc-a through the API; returns its verdict.
create function pg_temp.cancel(p_key text)
returns text
language sql
as $$
    select status from meter.event_cancel(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'customer', 'tap-rc-a', 'idempotency_key', p_key, 'reason', 'test')))
$$;

create temp view rolled as
select m.code as meter, r.hour, r.event_count, r.quantity, r.max_value, r.revision
from meter.rollup_hourly r join meter.meters m on m.id = r.meter_id
where r.customer_id = (select cust from fx);

create temp view rolled_unique as
select u.hour, u.unique_value, u.event_count
from meter.rollup_hourly_unique u
where u.customer_id = (select cust from fx);

create temp view cancellations as
select e.idempotency_key as key, c.rolled_up_at
from meter.event_cancellations c join meter.events e on e.id = c.event_id
where e.customer_id = (select cust from fx);

-- ---------------------------------------------------------------------------------------------
-- Committed history (transaction 100): 11 events.
-- ---------------------------------------------------------------------------------------------
select pg_temp.event('tap.rc.peak',  'p1', '2024-03-10 10:05+00', 5, '{}', '100');
select pg_temp.event('tap.rc.peak',  'p2', '2024-03-10 10:10+00', 9, '{}', '100');
select pg_temp.event('tap.rc.peak',  'p3', '2024-03-10 10:15+00', 7, '{}', '100');
select pg_temp.event('tap.rc.users', 'u1', '2024-03-10 10:20+00', 1, '{"user": "ann"}', '100');
select pg_temp.event('tap.rc.users', 'u2', '2024-03-10 10:25+00', 1, '{"user": "ann"}', '100');
select pg_temp.event('tap.rc.users', 'u3', '2024-03-10 10:30+00', 1, '{"user": "bob"}', '100');
select pg_temp.event('tap.rc.bytes', 'b1', '2024-03-10 10:35+00', 2, '{}', '100');
select pg_temp.event('tap.rc.bytes', 'b2', '2024-03-10 10:40+00', 3, '{}', '100');
select pg_temp.event('tap.rc.calls', 'c1', '2024-03-10 10:45+00', 1, '{}', '100');
select pg_temp.event('tap.rc.calls', 'c2', '2024-03-10 10:50+00', 1, '{}', '100');
select pg_temp.event('tap.rc.calls', 'c3', '2024-03-10 12:00+00', 1, '{}', '100');

select is(pg_catalog.current_setting('DateStyle'), 'SQL, DMY', 'this session''s DateStyle is SQL, DMY');

-- ---------------------------------------------------------------------------------------------
-- Cancelled before the rollup: c3 is the only event of its hour.
-- ---------------------------------------------------------------------------------------------
select is(pg_temp.cancel('c3'), 'cancelled', 'setup: c3 is cancelled before any run');

create temp table run1 as select * from meter.rollup_run();

select results_eq(
    $$select events_folded, cancellations_folded, hours_touched from run1$$,
    $$values (11::bigint, 1::bigint, 5::bigint)$$,
    'run 1 folds the 11 events and subtracts c3''s cancellation in the same run');

select results_eq(
    $$select meter, hour, event_count, quantity, max_value, revision from rolled order by meter, hour$$,
    $$values ('tap.rc.bytes'::text, '2024-03-10 10:00+00'::timestamptz, 2::bigint, 5::numeric, 3::numeric, 1::bigint),
             ('tap.rc.calls', '2024-03-10 10:00+00', 2, 2,  1,    1),
             ('tap.rc.calls', '2024-03-10 12:00+00', 0, 0,  null, 2),
             ('tap.rc.peak',  '2024-03-10 10:00+00', 3, 21, 9,    1),
             ('tap.rc.users', '2024-03-10 10:00+00', 3, 3,  1,    1)$$,
    'c3''s hour nets to zero: the row stays with no events, quantity 0 and no max, revised twice');

select results_eq(
    $$select key, rolled_up_at from cancellations$$,
    $$values ('c3'::text, pg_catalog.now())$$,
    'c3''s cancellation is marked rolled up by the run');

-- ---------------------------------------------------------------------------------------------
-- Cancelled after the rollup: the max of peak (p2 = 9), an "ann" of users, bytes' max (b2 = 3),
-- and a call.
-- ---------------------------------------------------------------------------------------------
create temp table after_run1 as select * from rolled;

select results_eq(
    $$select ord, status from meter.event_cancel($j$[
          {"customer": "tap-rc-a", "idempotency_key": "p2"}, {"customer": "tap-rc-a", "idempotency_key": "u1"},
          {"customer": "tap-rc-a", "idempotency_key": "b2"}, {"customer": "tap-rc-a", "idempotency_key": "c1"}]$j$)$$,
    $$values (0, 'cancelled'::text), (1, 'cancelled'), (2, 'cancelled'), (3, 'cancelled')$$,
    'setup: p2, u1, b2, c1 are cancelled after run 1');

select results_eq(
    $$select * from rolled order by meter, hour$$,
    $$select * from after_run1 order by meter, hour$$,
    'a cancellation alone changes no rollup row: the next run subtracts it');

create temp table run2 as select * from meter.rollup_run();

select results_eq(
    $$select events_folded, cancellations_folded, hours_touched from run2$$,
    $$values (0::bigint, 4::bigint, 4::bigint)$$,
    'run 2 subtracts the 4 cancellations, one hour each');

select results_eq(
    $$select meter, hour, event_count, quantity, max_value, revision from rolled order by meter, hour$$,
    $$values ('tap.rc.bytes'::text, '2024-03-10 10:00+00'::timestamptz, 1::bigint, 2::numeric, 2::numeric, 2::bigint),
             ('tap.rc.calls', '2024-03-10 10:00+00', 1, 1,  1,    2),
             ('tap.rc.calls', '2024-03-10 12:00+00', 0, 0,  null, 2),
             ('tap.rc.peak',  '2024-03-10 10:00+00', 2, 12, 7,    2),
             ('tap.rc.users', '2024-03-10 10:00+00', 2, 2,  1,    2)$$,
    'each cancelled event is subtracted once; peak''s and bytes'' max are recomputed from the '
    'remaining events (9 -> 7, 3 -> 2)');

select results_eq(
    $$select unique_value, event_count from rolled_unique order by unique_value$$,
    $$values ('ann'::text, 1::bigint), ('bob', 1)$$,
    'cancelling one of ann''s two events leaves ann with one');

select is_empty($$select key from cancellations where rolled_up_at is distinct from pg_catalog.now()$$,
                'every cancellation is now marked rolled up');

-- Subtracted once only: a further run, and a repeated cancellation, change nothing.
create temp table after_run2 as select * from rolled;
create temp table after_run2_unique as select * from rolled_unique;

select is(pg_temp.cancel('p2'), 'already_cancelled', 'cancelling p2 again: already_cancelled');

create temp table run3 as select * from meter.rollup_run();

select results_eq(
    $$select events_folded, cancellations_folded, hours_touched from run3$$,
    $$values (0::bigint, 0::bigint, 0::bigint)$$,
    'run 3 subtracts nothing');

select is(
    (select pg_catalog.count(*) from ((select * from rolled except all select * from after_run2)
                                      union all (select * from after_run2 except all select * from rolled)) d)
    + (select pg_catalog.count(*) from ((select * from rolled_unique except all select * from after_run2_unique)
                                        union all (select * from after_run2_unique except all select * from rolled_unique)) d),
    0::bigint,
    'no rollup row and no unique-value row changed');

-- ---------------------------------------------------------------------------------------------
-- A unique value's last event cancelled: its count goes to zero.
-- ---------------------------------------------------------------------------------------------
select is(pg_temp.cancel('u3'), 'cancelled', 'setup: bob''s only event u3 is cancelled');
create temp table run4 as select * from meter.rollup_run();

select results_eq(
    $$select unique_value, event_count from rolled_unique order by unique_value$$,
    $$values ('ann'::text, 1::bigint), ('bob', 0)$$,
    'bob''s count drops to 0 (the row stays; usage counts only values with events)');

-- ---------------------------------------------------------------------------------------------
-- A new event and a cancellation of the hour's max, folded by the same run.
-- Emulation: run 4 is taken to have run at horizon 200; transaction 200 then commits p4.
-- ---------------------------------------------------------------------------------------------
update meter.rollup_watermark set position_xid = '200', position_id = 0;
select pg_temp.event('tap.rc.peak', 'p4', '2024-03-10 10:55+00', 6, '{}', '200');
select is(pg_temp.cancel('p3'), 'cancelled', 'setup: p3 (7, the max of peak''s hour) is cancelled');

create temp table run5 as select * from meter.rollup_run();

select results_eq(
    $$select r.events_folded, r.cancellations_folded, h.event_count, h.quantity, h.max_value, h.revision
      from run5 r, rolled h where h.meter = 'tap.rc.peak'$$,
    $$values (1::bigint, 1::bigint, 2::bigint, 11::numeric, 6::numeric, 4::bigint)$$,
    'p4 is added and p3 subtracted in one run: count 2, sum 5+6, max recomputed to 6 (p4, folded by '
    'this very run), revised once per change');

-- ---------------------------------------------------------------------------------------------
-- Cancellations whose event is not folded yet wait for it.
-- (a) An event of this transaction: above every horizon it can see.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select status from meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
          'customer', 'tap-rc-a', 'meter', 'tap.rc.calls', 'idempotency_key', 'own',
          'occurred_at', pg_catalog.now())))$$,
    $$values ('accepted'::text)$$,
    'setup: an event of this transaction is stored');
select is(pg_temp.cancel('own'), 'cancelled', 'and cancelled');

-- (b) Transactions 300 and 301 commit after a run at horizon 300; the event of 301 is cancelled;
-- the next runs take one event each.
update meter.rollup_watermark set position_xid = '300', position_id = 0;
select pg_temp.event('tap.rc.calls', 'q1', '2024-03-10 14:00+00', 1, '{}', '300');
select pg_temp.event('tap.rc.calls', 'q2', '2024-03-10 14:10+00', 1, '{}', '301');
select pg_temp.cancel('q2');

create temp table run6 as select 'first'::text as name, * from meter.rollup_run(1);
create temp table after_run6 as select * from rolled where meter = 'tap.rc.calls' and hour = '2024-03-10 14:00+00';
insert into run6 select 'second', * from meter.rollup_run(1);

select results_eq(
    $$select name, events_folded, cancellations_folded from run6 order by name$$,
    $$values ('first'::text, 1::bigint, 0::bigint), ('second', 1, 1)$$,
    'the first one-event run folds q1 and leaves q2''s cancellation alone (q2 is not folded yet); '
    'the second folds q2 and subtracts its cancellation');

select results_eq(
    $$select 'first'::text, event_count, quantity, revision from after_run6
      union all
      select 'second', event_count, quantity, revision from rolled
      where meter = 'tap.rc.calls' and hour = '2024-03-10 14:00+00'$$,
    $$values ('first'::text, 1::bigint, 1::numeric, 1::bigint), ('second', 1, 1, 3)$$,
    'the hour never goes below what its folded events justify: 1 after the first run, 1 after the second');

select results_eq(
    $$select key, rolled_up_at from cancellations where key in ('own', 'q2') order by key$$,
    $$values ('own'::text, null::timestamptz), ('q2', pg_catalog.now())$$,
    'the cancellation of this transaction''s own event is still pending (its event is not folded)');

select is((select w.cancellations_total - wm0.cancellations_total from meter.rollup_watermark w, wm0),
          8::bigint, 'the watermark counts the 8 cancellations subtracted, each once');

select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'and rollup_verify finds the rollups consistent with the raw events and cancellations');

select * from finish();
rollback;
