-- Rollup shards (0025_rollup_shards, decision 125):
--   * meter.rollup_shards_set(n) folds every shard to one common position, then splits the
--     watermark into n rows (customer_id % n), the totals kept on shard 0's row;
--   * meter.rollup_run(max, shard) folds one shard's customers only: their events, cancellations
--     and redeliveries, nothing of the other shard's, whose events stay pending;
--   * every reader of the watermark asks the customer's shard: what is pending
--     (meter._rollup_pending, meter._unfolded, meter.rollup_lag), what is folded
--     (meter.rollup_verify, meter.meter_upsert's refusal), each against its own shard's position;
--   * changing the count while the shards stand at different positions folds the laggard first:
--     every event is counted once.
-- Emulated history as in rollup_ledger.test.sql: events of long-finished transactions (xid 100,
-- then 200 for those committed after a first run); the positions are set by hand where a test
-- needs the shards apart.
begin;
select plan(28);

\ir support/fixtures.sql

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
update meter.rollup_watermark set position_xid = '0', position_id = 0, redeliveries_xid = '0', redeliveries_id = 0;

-- Two customers in different shards of two (ids of different parity).
select meter.customer_upsert('tap-sh-a');
select meter.customer_upsert('tap-sh-b');
select meter.customer_upsert('tap-sh-c');
create temp table fx as
select (select id from meter.customers where external_id = 'tap-sh-a') as a,
       (select id from meter.customers where external_id in ('tap-sh-b', 'tap-sh-c') and id % 2 <> (select id % 2 from meter.customers where external_id = 'tap-sh-a')
        order by id limit 1) as b,
       meter.meter_upsert('tap.sh.calls', 'count') as m;
create temp table ext as
select (select external_id from meter.customers where id = (select a from fx)) as a,
       (select external_id from meter.customers where id = (select b from fx)) as b;

select pg_temp.put((select a from ext), 'tap.sh.calls', 'a-1', '2024-05-02 10:05+00');
select pg_temp.put((select a from ext), 'tap.sh.calls', 'a-2', '2024-05-02 10:15+00');
select pg_temp.put((select a from ext), 'tap.sh.calls', 'a-3', '2024-05-02 11:15+00');
select pg_temp.put((select b from ext), 'tap.sh.calls', 'b-1', '2024-05-02 10:05+00');
select pg_temp.put((select b from ext), 'tap.sh.calls', 'b-2', '2024-05-02 10:25+00');

-- One shard, as migrate leaves it; then two.
select results_eq($$select shard, shard_count, name from meter.rollup_watermark$$,
                  $$values (0, 1, 'events'::text)$$, 'after migrate: one shard, named events');
select is(meter.rollup_shards_set(2), 5::bigint, 'rollup_shards_set(2) first folds the 5 pending events');
select results_eq(
    $$select shard, shard_count, name, (position_xid, position_id) = (select position_xid, position_id from meter.rollup_watermark where shard = 0)
      from meter.rollup_watermark order by shard$$,
    $$values (0, 2, 'events'::text, true), (1, 2, 'events/1', true)$$,
    'two shards, at one common position; shard 0 keeps the name events');
select results_eq($$select sum(events_total)::bigint, sum(runs_total) > 0 from meter.rollup_watermark$$,
                  $$values (5::bigint, true)$$, 'the totals are kept (on shard 0''s row)');

-- After the split: both shards at (150, 0) (emulated); new events at xid 200 in both, a
-- cancellation of b-1 and a duplicate of a-1 and of b-2.
update meter.rollup_watermark set position_xid = '150', position_id = 0, redeliveries_xid = '150', redeliveries_id = 0;
select pg_temp.put((select a from ext), 'tap.sh.calls', 'a-4', '2024-05-02 10:45+00', 1, '{}', '200');
select pg_temp.put((select a from ext), 'tap.sh.calls', 'a-5', '2024-05-03 10:45+00', 1, '{}', '200');
select pg_temp.put((select b from ext), 'tap.sh.calls', 'b-3', '2024-05-02 10:35+00', 1, '{}', '200');
select pg_temp.put((select b from ext), 'tap.sh.calls', 'b-4', '2024-05-02 10:36+00', 1, '{}', '200');
select pg_temp.put((select b from ext), 'tap.sh.calls', 'b-5', '2024-05-03 10:37+00', 1, '{}', '200');
select pg_temp.put((select b from ext), 'tap.sh.calls', 'b-6', '2024-05-04 10:38+00', 1, '{}', '200');
-- (and one in two hours' time, for meter_upsert's check below)
select pg_temp.put((select b from ext), 'tap.sh.calls', 'b-f', pg_catalog.date_trunc('hour', pg_catalog.now()) + interval '2 hours',
                   1, '{}', '200');
select results_eq(
    $$select status from meter.event_cancel(pg_catalog.jsonb_build_array(
          pg_catalog.jsonb_build_object('customer', (select b from ext), 'idempotency_key', 'b-1')))$$,
    $$values ('cancelled'::text)$$, 'setup: b-1 is cancelled');
-- (b-2's written without its customer, as an ingest on the functions before 0025 would: the
-- trigger fills it in)
insert into meter.event_redeliveries (event_id, verdict, occurred_at, xid, customer_id)
select e.id, 'duplicate', e.occurred_at, '200', e.customer_id
from meter.events e where e.idempotency_key = 'a-1';
insert into meter.event_redeliveries (event_id, verdict, occurred_at, xid)
select e.id, 'duplicate', e.occurred_at, '200'
from meter.events e where e.idempotency_key = 'b-2';
select results_eq(
    $$select r.customer_id from meter.event_redeliveries r join meter.events e on e.id = r.event_id where e.idempotency_key = 'b-2'$$,
    $$select b from fx$$, 'a redelivery written without its customer gets it from its event (trigger)');

-- Shard of b only.
create temp table run_b as
select * from meter.rollup_run(1000000, (select (b % 2)::integer from fx));
select results_eq($$select ran, events_folded, cancellations_folded from run_b$$,
                  $$values (true, 5::bigint, 1::bigint)$$,
                  'rollup_run(max, b''s shard) folds b''s 5 new events and its cancellation, nothing of a''s');
select results_eq(
    $$select (select external_id from meter.customers where id = r.customer_id), pg_catalog.sum(r.event_count)::bigint
      from meter.rollup_hourly r where r.meter_id = (select m from fx) group by 1 order by 1$$,
    $$select * from (values ((select a from ext), 3::bigint), ((select b from ext), 6::bigint)) v order by 1$$,
    'rollups: a keeps its 3 first events, b has 2 + 5 - 1');
select results_eq(
    $$select (select external_id from meter.customers where id = l.customer_id), pg_catalog.sum(l.duplicates)::bigint
      from meter.rollup_ledger l where l.meter_id = (select m from fx) and l.duplicates > 0 group by 1$$,
    $$values ((select b from ext), 1::bigint)$$,
    'b''s duplicate is counted in b''s shard; a''s waits for a''s');

-- Readers, each against the customer's shard.
select results_eq($$select events from meter._rollup_pending()$$, $$values (2::bigint)$$,
                  '_rollup_pending: a''s two events past a''s shard''s position, none of b''s');
select results_eq(
    $$select (select external_id from meter.customers where id = u.customer_id), pg_catalog.sum(u.n)::bigint
      from meter._unfolded() u group by 1$$,
    $$values ((select a from ext), 2::bigint)$$,
    '_unfolded: the rows not folded yet are a''s two events, only');
select results_eq($$select shards, pending_events, (position_xid, position_id) = ('150'::xid8, 0::bigint) from meter.rollup_lag$$,
                  $$values (2, 2::bigint, true)$$,
                  'rollup_lag: two shards, two pending events, the position of the shard behind');
select is_empty($$select * from meter.rollup_verify('2024-05-01', '2024-06-01')$$,
                'rollup_verify: every hour agrees with the events folded in its customer''s shard');
select throws_like($$select meter.meter_upsert('tap.sh.calls', 'count', null, null, null,
                                               pg_catalog.date_trunc('hour', pg_catalog.now()) + interval '1 hour', array['region'])$$,
                   '%already has rolled-up events%',
                   'meter_upsert refuses a version over b''s folded events (b''s shard is ahead; a''s events there are not folded)');

-- Shard of a, then every shard.
select results_eq($$select events_folded, cancellations_folded from meter.rollup_run(1000000, (select (a % 2)::integer from fx))$$,
                  $$values (2::bigint, 0::bigint)$$, 'rollup_run(max, a''s shard) folds a''s 2 events');
select results_eq($$select ran, events_folded from meter.rollup_run()$$, $$values (true, 0::bigint)$$,
                  'rollup_run() runs every shard; nothing is left');
select results_eq(
    $$select (select external_id from meter.customers where id = r.customer_id), pg_catalog.sum(r.event_count)::bigint
      from meter.rollup_hourly r where r.meter_id = (select m from fx) group by 1 order by 1$$,
    $$select * from (values ((select a from ext), 5::bigint), ((select b from ext), 6::bigint)) v order by 1$$,
    'rollups: a 5, b 6');
select results_eq(
    $$select pg_catalog.sum(l.duplicates)::bigint from meter.rollup_ledger l where l.meter_id = (select m from fx)$$,
    $$values (2::bigint)$$, 'both duplicates counted, each once');

-- Shards apart, then three: the shard behind is folded first; every event counted once.
update meter.rollup_watermark set position_xid = '150', position_id = 0 where shard = (select (a % 2)::integer from fx);
delete from meter.rollup_hourly where customer_id = (select a from fx) and hour >= '2024-05-03';
-- (a's rollups put back to what its shard's position says: a-4 and a-5 above it)
update meter.rollup_hourly set event_count = 2, quantity = 2 where customer_id = (select a from fx) and hour = '2024-05-02 10:00+00';
update meter.rollup_ledger set events = events - 1, value_in = value_in - 1,
       key_checksum = key_checksum - hashtextextended('a-4', 0)
where customer_id = (select a from fx) and hour = '2024-05-02 10:00+00';
delete from meter.rollup_ledger where customer_id = (select a from fx) and hour = '2024-05-03 10:00+00';
select meter.rollup_period_rebuild((select a from fx));
select is(meter.rollup_shards_set(3), 2::bigint, 'rollup_shards_set(3) folds the 2 events of the shard behind first');
select results_eq(
    $$select shard, shard_count, (position_xid, position_id) = (select position_xid, position_id from meter.rollup_watermark where shard = 0)
      from meter.rollup_watermark order by shard$$,
    $$values (0, 3, true), (1, 3, true), (2, 3, true)$$, 'three shards at one common position');
select results_eq(
    $$select (select external_id from meter.customers where id = r.customer_id), pg_catalog.sum(r.event_count)::bigint
      from meter.rollup_hourly r where r.meter_id = (select m from fx) group by 1 order by 1$$,
    $$select * from (values ((select a from ext), 5::bigint), ((select b from ext), 6::bigint)) v order by 1$$,
    'each event counted once across the change: a 5, b 6');
select is_empty($$select * from meter.rollup_verify('2024-05-01', '2024-06-01')$$, 'rollup_verify empty after the change');
select is_empty($$select * from meter.rollup_ledger_period_verify()$$, 'the ledger''s period rows agree with its hours');

-- Refusals.
select results_eq($$select ran, events_folded from meter.rollup_run(10, 3)$$, $$values (false, 0::bigint)$$,
                  'rollup_run of a shard that does not exist (any more: the count changed): ran = false, nothing done');
select throws_ok($$select * from meter.rollup_run(10, 64)$$, '22023', null, 'rollup_run of shard 64 (beyond any count): 22023');
select throws_ok($$select meter.rollup_shards_set(0)$$, '22023', null, 'rollup_shards_set(0): 22023');

-- Back to one.
create temp table totals as select sum(events_total)::bigint as events, sum(runs_total)::bigint as runs from meter.rollup_watermark;
select meter.rollup_shards_set(1);
select results_eq($$select shard, shard_count, name, events_total, runs_total from meter.rollup_watermark$$,
                  $$select 0, 1, 'events'::text, events, runs + 3 from totals$$,
                  'back to one shard, named events, with every shard''s totals (and the three runs that found nothing)');

select * from finish();
rollback;
