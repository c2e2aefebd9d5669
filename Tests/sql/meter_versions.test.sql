-- Meter versions (meter.meter_upsert, meter.meter_versions, meter.meter_version_ranges): a meter's
-- definition is a list of versions, each in force from a UTC hour until the next one's. An
-- identical definition adds nothing; a changed one adds a version from the next UTC hour by
-- default, or from an explicit effective_from, which must lie on a UTC hour boundary, in the
-- future, and after the latest version's start (else 22023). A new version is refused (55000)
-- while rolled-up events of the meter exist at or after its start; events not rolled up yet do not
-- block it. The rollup folds each hour with the version in force at that hour.
-- The session runs in Asia/Kolkata (UTC+05:30): its whole hours are not UTC hours.
--
-- now() is this transaction's start, the clock meter_upsert uses too: h0 below is the UTC hour it
-- falls in, and every "future" hour is relative to it.
-- Emulated history (see rollup_run.test.sql): the rolled-up events get an explicit xid of a
-- finished transaction (100), and the watermark is set back before it.
-- Not testable here: the REPEATABLE READ guard in meter_upsert (a snapshot older than a rollup
-- that committed before the rollup lock was granted raises 40001) needs a second session.
begin;
select plan(31);

set local timezone = 'Asia/Kolkata';

create temp table t as select pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC') as h0;

create temp view versions as
select m.code, v.version, v.aggregation, v.unique_property, v.effective_from
from meter.meter_versions v join meter.meters m on m.id = v.meter_id
where m.code like 'tap.mv.%';

-- ---------------------------------------------------------------------------------------------
-- Creation and identical definitions.
-- ---------------------------------------------------------------------------------------------
create temp table fx as select meter.meter_upsert('tap.mv.calls') as m_calls;

select results_eq(
    $$select version, aggregation, unique_property, effective_from from versions where code = 'tap.mv.calls'$$,
    $$values (1, 'count'::text, null::text, '-infinity'::timestamptz)$$,
    'a new meter has version 1, in force since -infinity');

select is(meter.meter_upsert('tap.mv.calls', 'count', null, 'Calls', 'call'), (select m_calls from fx),
          'an identical definition with a new name and unit: same id');

select results_eq(
    $$select m.name, m.unit, (select pg_catalog.count(*) from versions v where v.code = m.code)
      from meter.meters m where m.code = 'tap.mv.calls'$$,
    $$values ('Calls'::text, 'call'::text, 1::bigint)$$,
    'name and unit change in place; no version is added');

select is(meter.meter_upsert('tap.mv.calls', 'count', null, null, null, (select h0 from t) + interval '7 hours'),
          (select m_calls from fx), 'an identical definition with an effective_from: same id');

select is((select pg_catalog.count(*) from versions where code = 'tap.mv.calls'), 1::bigint,
          'and still no new version: effective_from only matters for a change');

-- ---------------------------------------------------------------------------------------------
-- A change: version 2 from the next UTC hour.
-- ---------------------------------------------------------------------------------------------
select is(meter.meter_upsert('tap.mv.calls', 'sum'), (select m_calls from fx),
          'a different aggregation: same id');

select results_eq(
    $$select version, aggregation, effective_from from versions where code = 'tap.mv.calls' order by version$$,
    $$values (1, 'count'::text, '-infinity'::timestamptz), (2, 'sum', (select h0 from t) + interval '1 hour')$$,
    'version 1 is untouched; version 2 is in force from the next UTC hour');

select is((select created_at from meter.meter_versions where meter_id = (select m_calls from fx) and version = 2),
          pg_catalog.now(), 'version 2 records when it was created');

select is(meter.meter_upsert('tap.mv.calls', 'sum'), (select m_calls from fx),
          'the latest version''s definition again: same id');
select is((select pg_catalog.count(*) from versions where code = 'tap.mv.calls'), 2::bigint,
          'and no version 3');

select throws_ok($$select meter.meter_upsert('tap.mv.calls', 'count')$$, '22023', null,
                 'changing again by default (the next hour again) is not after version 2''s start: 22023');

select is(meter.meter_upsert('tap.mv.calls', 'count', null, null, null, (select h0 from t) + interval '3 hours'),
          (select m_calls from fx), 'back to count from an explicit later hour: same id');

select results_eq(
    $$select version, aggregation, effective_from from versions where code = 'tap.mv.calls' order by version$$,
    $$values (1, 'count'::text, '-infinity'::timestamptz), (2, 'sum', (select h0 from t) + interval '1 hour'),
             (3, 'count', (select h0 from t) + interval '3 hours')$$,
    'version 3 is in force from the explicit hour');

select results_eq(
    $$select r.version, r.aggregation, r.effective_from, r.effective_until from meter.meter_version_ranges r
      where r.meter_id = (select m_calls from fx) order by r.version$$,
    $$values (1, 'count'::text, '-infinity'::timestamptz, (select h0 from t) + interval '1 hour'),
             (2, 'sum', (select h0 from t) + interval '1 hour', (select h0 from t) + interval '3 hours'),
             (3, 'count', (select h0 from t) + interval '3 hours', 'infinity')$$,
    'meter_version_ranges: each version is in force until the next one starts, the latest until infinity');

-- ---------------------------------------------------------------------------------------------
-- effective_from rules (the latest version is now version 3, from h0 + 3 hours).
-- ---------------------------------------------------------------------------------------------
select throws_ok(
    $$select meter.meter_upsert('tap.mv.calls', 'max', null, null, null, (select h0 from t) + interval '5 hours 30 minutes')$$,
    '22023', null,
    'half past a UTC hour (a whole hour of this session''s time zone) is not a UTC hour boundary: 22023');
select throws_ok(
    $$select meter.meter_upsert('tap.mv.calls', 'max', null, null, null, (select h0 from t) + interval '5 hours 0.000001 seconds')$$,
    '22023', null, 'one microsecond past an hour: 22023');
select throws_ok(
    $$select meter.meter_upsert('tap.mv.calls', 'max', null, null, null, (select h0 from t) - interval '1 hour')$$,
    '22023', null, 'an hour in the past: 22023');
select throws_ok(
    $$select meter.meter_upsert('tap.mv.calls', 'max', null, null, null, (select h0 from t))$$,
    '22023', null, 'the current hour (already started): 22023');
select throws_ok(
    $$select meter.meter_upsert('tap.mv.calls', 'max', null, null, null, (select h0 from t) + interval '2 hours')$$,
    '22023', null, 'a future hour before the latest version''s start: 22023');
select throws_ok(
    $$select meter.meter_upsert('tap.mv.calls', 'max', null, null, null, (select h0 from t) + interval '3 hours')$$,
    '22023', null, 'the latest version''s own start: 22023');

select is((select pg_catalog.count(*) from versions where code = 'tap.mv.calls'), 3::bigint,
          'refused changes add no version');

-- ---------------------------------------------------------------------------------------------
-- Rolled-up events at or after effective_from refuse the version (55000); events not rolled up
-- do not.
-- ---------------------------------------------------------------------------------------------
select meter.customer_upsert('tap-mv-cust');
create temp table fx2 as
select meter.meter_upsert('tap.mv.rolled')  as m_rolled,
       meter.meter_upsert('tap.mv.pending') as m_pending,
       meter.meter_upsert('tap.mv.seen')    as m_seen;

-- tap.mv.seen counts distinct users from the next hour on (before the rollup below).
select meter.meter_upsert('tap.mv.seen', 'unique_count', 'user');

-- Committed events (transaction 100), up to max_future ahead as ingest can accept them: rolled up.
update meter.rollup_watermark set position_xid = '0', position_id = 0;
insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at, properties, xid)
select (select id from meter.customers where external_id = 'tap-mv-cust'), m, k, (select h0 from t) + at, p, '100'
from (values ((select m_rolled from fx2), 'r1', interval '2 hours 10 minutes', '{}'::jsonb),
             ((select m_rolled from fx2), 'r2', interval '3 hours', '{}'),
             ((select m_seen from fx2),   's1', interval '10 minutes', '{"user": "ann"}'),
             ((select m_seen from fx2),   's2', interval '1 hour 10 minutes', '{"user": "ann"}'),
             ((select m_seen from fx2),   's3', interval '1 hour 20 minutes', '{"user": "bob"}')) v(m, k, at, p);
-- An event of this transaction (not committed, so not rolled up), 2 hours ahead.
select meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
    'customer', 'tap-mv-cust', 'meter', 'tap.mv.pending', 'idempotency_key', 'p1',
    'occurred_at', (select h0 from t) + interval '2 hours')), p_max_future => interval '3 hours');

create temp table run1 as select * from meter.rollup_run();

select is_empty(
    $$select 1 from meter.events e, meter.rollup_watermark w
      where e.customer_id = (select id from meter.customers where external_id = 'tap-mv-cust')
        and (e.xid, e.id) >= (w.position_xid, w.position_id) and e.idempotency_key <> 'p1'$$,
    'setup: the committed events are rolled up, this transaction''s is not');

select throws_ok(
    $$select meter.meter_upsert('tap.mv.rolled', 'sum', null, 'Renamed', null, (select h0 from t) + interval '2 hours')$$,
    '55000', null, 'a rolled-up event after effective_from refuses the version: 55000');
select throws_ok(
    $$select meter.meter_upsert('tap.mv.rolled', 'sum', null, null, null, (select h0 from t) + interval '3 hours')$$,
    '55000', null, 'a rolled-up event exactly at effective_from refuses it too');
select results_eq(
    $$select m.name, (select pg_catalog.count(*) from versions v where v.code = m.code)
      from meter.meters m where m.code = 'tap.mv.rolled'$$,
    $$values (null::text, 1::bigint)$$,
    'a refused call changes nothing, not even the name it carried');
select is(meter.meter_upsert('tap.mv.rolled', 'sum', null, null, null, (select h0 from t) + interval '4 hours'),
          (select m_rolled from fx2), 'from the hour after the last rolled-up event, the version is added');
select is(meter.meter_upsert('tap.mv.pending', 'sum'), (select m_pending from fx2),
          'an event after effective_from that is not rolled up yet does not block a version');

select results_eq(
    $$select code, version, aggregation, effective_from from versions
      where code in ('tap.mv.rolled', 'tap.mv.pending') and version > 1 order by code$$,
    $$values ('tap.mv.pending'::text, 2, 'sum'::text, (select h0 from t) + interval '1 hour'),
             ('tap.mv.rolled', 2, 'sum', (select h0 from t) + interval '4 hours')$$,
    'both new versions are recorded');

-- ---------------------------------------------------------------------------------------------
-- The rollup folds each hour with its own version: tap.mv.seen counts from h0 + 1 hour.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select u.hour, u.unique_value, u.event_count from meter.rollup_hourly_unique u
      where u.meter_id = (select m_seen from fx2) order by u.hour, u.unique_value$$,
    $$values ((select h0 from t) + interval '1 hour', 'ann'::text, 1::bigint),
             ((select h0 from t) + interval '1 hour', 'bob', 1)$$,
    'unique values are kept for the hours of the unique_count version only');

select results_eq(
    $$select bucket_start, meter_version, aggregation, quantity, event_count
      from meter.usage('tap-mv-cust', 'tap.mv.seen', (select h0 from t), (select h0 from t) + interval '2 hours', 'hour')$$,
    $$values ((select h0 from t), 1, 'count'::text, 1::numeric, 1::bigint),
             ((select h0 from t) + interval '1 hour', 2, 'unique_count', 2, 2)$$,
    'and usage applies version 1 (count) and version 2 (unique_count) to their hours');

-- ---------------------------------------------------------------------------------------------
-- The table's own constraints.
-- ---------------------------------------------------------------------------------------------
select throws_ok(
    $$insert into meter.meter_versions (meter_id, version, aggregation, effective_from)
      values ((select m_calls from fx), 9, 'count', '2030-01-01 10:30+00')$$,
    '23514', 'new row for relation "meter_versions" violates check constraint "meter_versions_hour_aligned"',
    'meter_versions refuses an effective_from off a UTC hour (23514)');

select * from finish();
rollback;
