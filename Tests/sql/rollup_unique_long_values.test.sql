-- Long unique_count values. meter.rollup_hourly_unique is keyed by the SHA-256 of the value
-- (value_hash = sha256(convert_to(unique_value, 'UTF8'))), not by the value: a property value of
-- a few kB cannot be a B-tree key (2704 bytes at most), and one such event must not stop every
-- rollup. Here a ~6 kB incompressible value is folded by meter.rollup_run(), counted by
-- meter.usage() as one distinct value next to short ones, counted once however many events carry
-- it, and its cancellation decrements its own row; meter.rollup_verify() agrees after each step.
--
-- Emulated history (see rollup_run.test.sql): events get explicit xids of finished transactions;
-- for events "committed after a run", the watermark is first set back to the horizon that run is
-- taken to have had. The suite runs on a freshly migrated database (checked first).
begin;
select plan(27);

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');

update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-ul-a')                          as cust,
       meter.meter_upsert('tap.ul.users', 'unique_count', 'user') as m_users;

-- The long value: 200 md5 digests, 6400 bytes of hex that pglz cannot compress; and a second one
-- with the same 6400-byte prefix.
create temp table lv as
select v, v || '!' as v2
from (select pg_catalog.string_agg(pg_catalog.md5(i::text), '' order by i) as v
      from pg_catalog.generate_series(1, 200) i) s;

select results_eq(
    $$select pg_catalog.octet_length(v), pg_catalog.octet_length(v2) from lv$$,
    $$values (6400, 6401)$$,
    'setup: the long values are 6400 and 6401 bytes');

-- The value really is too long for a B-tree key (what a primary key on unique_value would hit).
create temp table btree_probe (v text primary key);
select throws_ok($$insert into btree_probe select v from lv$$, '54000', null,
                 'setup: the long value cannot be a B-tree key (index row size exceeds the 2704-byte maximum)');

-- An event of tap-ul-a as the committed transaction p_xid stored it, with {"user": p_user}.
\ir support/fixtures.sql
create function pg_temp.user_event(p_key text, p_occurred_at timestamptz, p_user text, p_xid xid8)
returns bigint language sql
as $$ select pg_temp.put('tap-ul-a', 'tap.ul.users', p_key, p_occurred_at, p_properties => pg_catalog.jsonb_build_object('user', p_user), p_xid => p_xid) $$;

-- Unique-value rows of this test, the long values by name.
create temp view rolled_unique as
select u.hour,
       case u.unique_value when lv.v then '<long>' when lv.v2 then '<long>!' else u.unique_value end as val,
       u.event_count,
       u.value_hash = pg_catalog.sha256(pg_catalog.convert_to(u.unique_value, 'UTF8')) as hash_ok
from meter.rollup_hourly_unique u, lv
where u.customer_id = (select cust from fx);

create temp view usage_hourly as
select bucket_start, quantity, event_count
from meter.usage('tap-ul-a', 'tap.ul.users', '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'hour');

create temp view usage_daily as
select bucket_start, quantity, event_count
from meter.usage('tap-ul-a', 'tap.ul.users', '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'day');

-- ---------------------------------------------------------------------------------------------
-- Run 1: the long value next to a short one (transaction 100).
-- ---------------------------------------------------------------------------------------------
select pg_temp.user_event('u1', '2024-03-10 10:05+00', (select v from lv), '100');
select pg_temp.user_event('u2', '2024-03-10 10:10+00', 'ann', '100');

select lives_ok($$create temp table run1 as select * from meter.rollup_run()$$,
                'run 1 folds an event whose unique value is 6400 bytes without error');

select results_eq(
    $$select ran, events_folded, hours_touched, more_pending from run1$$,
    $$values (true, 2::bigint, 1::bigint, false)$$,
    'run 1 folds both events into one hour');

select results_eq(
    $$select hour, val, event_count, hash_ok from rolled_unique order by hour, val$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, '<long>'::text, 1::bigint, true),
             ('2024-03-10 10:00+00', 'ann', 1, true)$$,
    'one row per value, the long one stored whole, each keyed by sha256 of its UTF-8 bytes');

select results_eq(
    $$select bucket_start, quantity, event_count from usage_hourly$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, 2::numeric, 2::bigint)$$,
    'usage counts the long value as one distinct value next to the short one');

select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'rollup_verify finds no difference after run 1');

-- ---------------------------------------------------------------------------------------------
-- Run 2: committed after run 1 (taken to have run at horizon 200). The same long value again in
-- hour 10 (an existing row: the ON CONFLICT path); in hour 11, the long value twice in one batch
-- and a different long value sharing its first 6400 bytes.
-- ---------------------------------------------------------------------------------------------
update meter.rollup_watermark set position_xid = '200', position_id = 0;

select pg_temp.user_event('u3', '2024-03-10 10:20+00', (select v from lv), '200');
select pg_temp.user_event('u4', '2024-03-10 11:05+00', (select v from lv), '201');
select pg_temp.user_event('u5', '2024-03-10 11:10+00', (select v from lv), '201');
select pg_temp.user_event('u6', '2024-03-10 11:15+00', (select v2 from lv), '201');

select lives_ok($$create temp table run2 as select * from meter.rollup_run()$$,
                'run 2 folds the late events without error');

select results_eq(
    $$select events_folded, hours_touched from run2$$,
    $$values (4::bigint, 2::bigint)$$,
    'run 2 folds the 4 late events into 2 hours');

select results_eq(
    $$select hour, val, event_count, hash_ok from rolled_unique order by hour, val$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, '<long>'::text, 2::bigint, true),
             ('2024-03-10 10:00+00', 'ann', 1, true),
             ('2024-03-10 11:00+00', '<long>', 2, true),
             ('2024-03-10 11:00+00', '<long>!', 1, true)$$,
    'a second event with the long value adds to its row (2 events), in a later run or in the same batch; '
    'a value sharing its 6400-byte prefix gets its own row');

select results_eq(
    $$select bucket_start, quantity, event_count from usage_hourly order by bucket_start$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, 2::numeric, 3::bigint),
             ('2024-03-10 11:00+00', 2, 3)$$,
    'two events with the same long value count once: hour 10 still has 2 distinct values (3 events), '
    'hour 11 has 2 (the two long values)');

select results_eq(
    $$select bucket_start, quantity, event_count from usage_daily$$,
    $$values ('2024-03-10 00:00+00'::timestamptz, 3::numeric, 6::bigint)$$,
    'over the day: 3 distinct values (the long value once across both hours, its variant, ann)');

select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'rollup_verify finds no difference after run 2');

-- ---------------------------------------------------------------------------------------------
-- Run 3: one of the two hour-10 events with the long value is cancelled.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select status from meter.event_cancel('[{"customer": "tap-ul-a", "idempotency_key": "u1"}]')$$,
    $$values ('cancelled'::text)$$,
    'setup: u1 (the long value, hour 10) is cancelled');

select lives_ok($$create temp table run3 as select * from meter.rollup_run()$$,
                'run 3 subtracts the cancellation without error');

select results_eq(
    $$select events_folded, cancellations_folded, hours_touched from run3$$,
    $$values (0::bigint, 1::bigint, 1::bigint)$$,
    'run 3 subtracts one cancellation, in one hour');

select results_eq(
    $$select hour, val, event_count from rolled_unique order by hour, val$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, '<long>'::text, 1::bigint),
             ('2024-03-10 10:00+00', 'ann', 1),
             ('2024-03-10 11:00+00', '<long>', 2),
             ('2024-03-10 11:00+00', '<long>!', 1)$$,
    'the cancellation decrements the long value''s row of hour 10 (2 -> 1) and no other');

select results_eq(
    $$select bucket_start, quantity, event_count from usage_hourly order by bucket_start$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, 2::numeric, 2::bigint),
             ('2024-03-10 11:00+00', 2, 3)$$,
    'hour 10 still has 2 distinct values (the long value''s other event remains), 2 events');

select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'rollup_verify finds no difference after run 3');

-- ---------------------------------------------------------------------------------------------
-- Run 4: the other hour-10 event with the long value is cancelled too.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select status from meter.event_cancel('[{"customer": "tap-ul-a", "idempotency_key": "u3"}]')$$,
    $$values ('cancelled'::text)$$,
    'setup: u3 (the long value''s last event in hour 10) is cancelled');

select lives_ok($$create temp table run4 as select * from meter.rollup_run()$$,
                'run 4 subtracts the cancellation without error');

select results_eq(
    $$select events_folded, cancellations_folded, hours_touched from run4$$,
    $$values (0::bigint, 1::bigint, 1::bigint)$$,
    'run 4 subtracts one cancellation, in one hour');

select results_eq(
    $$select hour, val, event_count from rolled_unique order by hour, val$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, '<long>'::text, 0::bigint),
             ('2024-03-10 10:00+00', 'ann', 1),
             ('2024-03-10 11:00+00', '<long>', 2),
             ('2024-03-10 11:00+00', '<long>!', 1)$$,
    'the long value''s row of hour 10 goes to 0 and stays');

select results_eq(
    $$select bucket_start, quantity, event_count from usage_hourly order by bucket_start$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, 1::numeric, 1::bigint),
             ('2024-03-10 11:00+00', 2, 3)$$,
    'hour 10 now has 1 distinct value (a row at 0 does not count)');

select results_eq(
    $$select bucket_start, quantity, event_count from usage_daily$$,
    $$values ('2024-03-10 00:00+00'::timestamptz, 3::numeric, 4::bigint)$$,
    'over the day the long value still counts once (its hour-11 events)');

select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'rollup_verify finds no difference after run 4');

select * from finish();
rollback;
