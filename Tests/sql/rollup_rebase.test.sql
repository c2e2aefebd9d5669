-- meter.rollup_rebase(): a database restored from another cluster carries that cluster's
-- transaction ids; the rollup watermark is then ahead of this cluster's horizon and
-- meter.rollup_run() refuses (55000) instead of skipping events. rollup_rebase() maps every folded
-- event to xid 3 and every pending one to xid 4, sets the watermark to (4, 0), and so keeps what
-- was folded folded and what was pending pending.
--
-- Emulation: history is first built and folded with explicit old xids (as in rollup_run.test.sql);
-- a "restore from a cluster whose ids were a million higher" is then emulated by shifting every
-- event's xid and the watermark by 1,000,000; one more event arrives that the old cluster had not
-- folded yet (above the shifted watermark). The suite runs on a freshly migrated database.
begin;
select plan(11);

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');

update meter.rollup_watermark set position_xid = '0', position_id = 0;
select meter.customer_upsert('tap-rb-a');
select meter.meter_upsert('tap.rb.bytes', 'sum');

\ir support/fixtures.sql
create function pg_temp.bytes_event(p_key text, p_value numeric, p_xid xid8)
returns bigint language sql
as $$ select pg_temp.put('tap-rb-a', 'tap.rb.bytes', p_key, '2024-03-10 10:30+00', p_value, p_xid => p_xid) $$;

select pg_temp.bytes_event('a', 1, '100');
select pg_temp.bytes_event('b', 2, '101');
select pg_temp.bytes_event('c', 4, '102');
-- a duplicate of a, recorded by a finished transaction (the ledger counts it; decision 123)
insert into meter.event_redeliveries (event_id, verdict, occurred_at, xid, customer_id)
select id, 'duplicate', occurred_at, '103', customer_id from meter.events where idempotency_key = 'a';
create temp table run1 as select * from meter.rollup_run();
select is((select events_folded from run1), 3::bigint, 'setup: three events folded before the "restore"');

-- The restore: every id a million higher; one more event, not yet folded by the old cluster.
update meter.events set xid = (xid::text::bigint + 1000000)::text::xid8;
update meter.rollup_watermark set position_xid = (position_xid::text::bigint + 1000000)::text::xid8,
                                  redeliveries_xid = (redeliveries_xid::text::bigint + 1000000)::text::xid8;
update meter.event_redeliveries set xid = (xid::text::bigint + 1000000)::text::xid8;
select pg_temp.bytes_event('d', 8, ((select position_xid from meter.rollup_watermark)::text::bigint + 5)::text::xid8);
-- and a duplicate of b recorded after the old cluster's last run
insert into meter.event_redeliveries (event_id, verdict, occurred_at, xid, customer_id)
select id, 'duplicate', occurred_at, ((select redeliveries_xid from meter.rollup_watermark)::text::bigint + 5)::text::xid8, customer_id
from meter.events where idempotency_key = 'b';

select throws_ok($$select * from meter.rollup_run()$$, '55000', null,
                 'before the rebase the rollup refuses: its watermark is ahead of this cluster''s horizon');

select is(meter.rollup_rebase(), 4::bigint, 'rollup_rebase re-bases every event (4 rows)');

select results_eq(
    $$select e.idempotency_key, e.xid from meter.events e order by e.idempotency_key$$,
    $$values ('a'::text, '3'::xid8), ('b', '3'), ('c', '3'), ('d', '4')$$,
    'folded events get xid 3, the pending one xid 4');

select results_eq(
    $$select position_xid, position_id, redeliveries_xid, redeliveries_id from meter.rollup_watermark$$,
    $$values ('4'::xid8, 0::bigint, '4'::xid8, 0::bigint)$$,
    'the watermark is (4, 0), for events and redeliveries: below every id this cluster hands out');
select results_eq(
    $$select e.idempotency_key, r.xid from meter.event_redeliveries r join meter.events e on e.id = r.event_id order by 1$$,
    $$values ('a'::text, '3'::xid8), ('b', '4')$$,
    'the redelivery counted before gets xid 3, the one recorded after xid 4');

create temp table run2 as select * from meter.rollup_run();
select results_eq(
    $$select r.ran, r.events_folded, h.event_count, h.quantity
      from run2 r, meter.rollup_hourly h
      where h.customer_id = (select id from meter.customers where external_id = 'tap-rb-a')$$,
    $$values (true, 1::bigint, 4::bigint, 15::numeric)$$,
    'the next run folds only the pending event: 1+2+4 folded once before, +8 now');

select is_empty($$select * from meter.rollup_verify('2024-03-10', '2024-03-11')$$,
                'rollup_verify agrees after the rebase');
select results_eq(
    $$select sum(events)::bigint, sum(duplicates)::bigint from meter.rollup_ledger$$,
    $$values (4::bigint, 2::bigint)$$,
    'the ledger counts each event and each duplicate once across the rebase');

select throws_ok($$select meter.rollup_rebase()$$, '55000', null,
                 'a second rebase refuses: the watermark is no longer ahead');

select * from finish();
rollback;
