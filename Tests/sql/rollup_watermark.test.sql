-- meter.rollup_run(max_events) and the watermark: events are taken in (xid, id) order, at most
-- max_events per run; a run cut short says more_pending and leaves the watermark right after its
-- last event, in the middle of that event's transaction if need be, (last_xid, last_id + 1); the
-- follow-up runs continue from there and fold every event exactly once; a run that folds
-- everything below its horizon moves the watermark to (horizon, 0). The watermark row keeps the
-- totals and the latest run's figures. A max_events that is null or below 1 raises 22023 and
-- changes nothing.
--
-- Emulated history (see rollup_run.test.sql): events get explicit xids of long finished
-- transactions (100, 101, 102), below any horizon this transaction can see; the watermark starts
-- before them. The suite runs on a freshly migrated database: the first test checks that no event
-- was stored before, since a run folds every pending event of the database.
begin;
select plan(14);

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');

update meter.rollup_watermark set position_xid = '0', position_id = 0;
create temp table wm0 as select * from meter.rollup_watermark;

create temp table fx as
select meter.customer_upsert('tap-rw-a') as cust,
       meter.meter_upsert('tap.rw.bytes', 'sum') as m_bytes;

\ir support/fixtures.sql
create function pg_temp.bytes_event(p_key text, p_value numeric, p_xid xid8)
returns bigint language sql
as $$ select pg_temp.put('tap-rw-a', 'tap.rw.bytes', p_key, '2024-03-10 10:30+00', p_value, p_xid => p_xid) $$;

-- Six events of three transactions. Transaction 102 inserted first (smallest id): (xid, id) order
-- is not id order. Values are powers of two, so the sum says which events were counted, and how
-- often.
create temp table ev (k text primary key, id bigint not null);
insert into ev values ('z',  pg_temp.bytes_event('z',  32, '102'));
insert into ev values ('a1', pg_temp.bytes_event('a1',  1, '100'));
insert into ev values ('a2', pg_temp.bytes_event('a2',  2, '100'));
insert into ev values ('a3', pg_temp.bytes_event('a3',  4, '100'));
insert into ev values ('b1', pg_temp.bytes_event('b1',  8, '101'));
insert into ev values ('b2', pg_temp.bytes_event('b2', 16, '101'));

-- And one event of this very transaction, which no run here can fold.
select results_eq(
    $$select status from meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
          'customer', 'tap-rw-a', 'meter', 'tap.rw.bytes', 'idempotency_key', 'own',
          'occurred_at', pg_catalog.now(), 'value', '64')))$$,
    $$values ('accepted'::text)$$,
    'setup: an event of this transaction is stored');

-- ---------------------------------------------------------------------------------------------
-- max_events must be a positive integer.
-- ---------------------------------------------------------------------------------------------
select throws_ok($$select * from meter.rollup_run(null)$$, '22023',
                 'max_events must be a positive integer, got null', 'max_events null raises 22023');
select throws_ok($$select * from meter.rollup_run(0)$$, '22023',
                 'max_events must be a positive integer, got 0', 'max_events 0 raises 22023');
select throws_ok($$select * from meter.rollup_run(-5)$$, '22023',
                 'max_events must be a positive integer, got -5', 'a negative max_events raises 22023');

select results_eq(
    $$select w.position_xid, w.position_id, w.runs_total, w.events_total, w.last_run_at
      from meter.rollup_watermark w$$,
    $$select position_xid, position_id, runs_total, events_total, last_run_at from wm0$$,
    'a refused call changes nothing: same position, totals and last run');

select is_empty($$select 1 from meter.rollup_hourly where customer_id = (select cust from fx)$$,
                'and folds nothing');

-- ---------------------------------------------------------------------------------------------
-- Four runs of at most 2 events each.
-- ---------------------------------------------------------------------------------------------
create temp table runs as select 'A'::text as name, * from meter.rollup_run(2);
create temp table states as
select 'A'::text as name, r.event_count, r.quantity, r.revision, w.position_xid, w.position_id,
       w.last_run_events, w.last_run_hours
from meter.rollup_watermark w
left join meter.rollup_hourly r on r.customer_id = (select cust from fx) and r.hour = '2024-03-10 10:00+00';

insert into runs select 'B', * from meter.rollup_run(2);
insert into states
select 'B', r.event_count, r.quantity, r.revision, w.position_xid, w.position_id, w.last_run_events, w.last_run_hours
from meter.rollup_watermark w
left join meter.rollup_hourly r on r.customer_id = (select cust from fx) and r.hour = '2024-03-10 10:00+00';

insert into runs select 'C', * from meter.rollup_run(2);
insert into states
select 'C', r.event_count, r.quantity, r.revision, w.position_xid, w.position_id, w.last_run_events, w.last_run_hours
from meter.rollup_watermark w
left join meter.rollup_hourly r on r.customer_id = (select cust from fx) and r.hour = '2024-03-10 10:00+00';

insert into runs select 'D', * from meter.rollup_run(2);
insert into states
select 'D', r.event_count, r.quantity, r.revision, w.position_xid, w.position_id, w.last_run_events, w.last_run_hours
from meter.rollup_watermark w
left join meter.rollup_hourly r on r.customer_id = (select cust from fx) and r.hour = '2024-03-10 10:00+00';

select results_eq(
    $$select name, ran, events_folded, hours_touched, more_pending, position_xid, position_id from runs
      where name in ('A', 'B') order by name$$,
    $$values ('A'::text, true, 2::bigint, 1::bigint, true, '100'::xid8, (select id from ev where k = 'a3')),
             ('B',       true, 2,         1,         true, '101',       (select id from ev where k = 'b2'))$$,
    'runs A and B fold 2 events each, in (xid, id) order, say more_pending, and stop at the first '
    'event they did not fold: in the middle of transaction 100 for run A');

select results_eq(
    $$select ran, events_folded, hours_touched, more_pending, position_xid = horizon_xid, position_id
      from runs where name in ('C', 'D') order by name$$,
    $$values (true, 2::bigint, 1::bigint, false, true, 0::bigint),
             (true, 0::bigint, 0::bigint, false, true, 0::bigint)$$,
    'run C folds the last 2 events below the horizon: nothing is left, so no more_pending, and the '
    'watermark moves to (horizon, 0); run D finds nothing');

select results_eq(
    $$select s.name, s.event_count, s.quantity, s.revision from states s order by s.name$$,
    $$values ('A'::text, 2::bigint, 3::numeric, 1::bigint), ('B', 4, 15, 2), ('C', 6, 63, 3), ('D', 6, 63, 3)$$,
    'after each run the hour holds exactly the events folded so far: 1+2, +4+8, +16+32 = 63, '
    'every event once, the row revised once per run that changed it');

select results_eq(
    $$select s.name, s.position_xid, s.position_id, s.last_run_events, s.last_run_hours from states s order by s.name$$,
    $$select r.name, r.position_xid, r.position_id, r.events_folded, r.hours_touched from runs r order by r.name$$,
    'after each run the watermark row holds the position and figures that run returned');

select results_eq(
    $$select w.runs_total - wm0.runs_total, w.events_total - wm0.events_total,
             w.cancellations_total - wm0.cancellations_total, w.last_run_events, w.last_run_cancellations,
             w.last_run_hours, w.updated_at = pg_catalog.now(),
             w.last_run_at between pg_catalog.now() and pg_catalog.clock_timestamp(),
             w.last_run_ms = (select duration_ms from runs where name = 'D') and w.last_run_ms >= 0
      from meter.rollup_watermark w, wm0$$,
    $$values (4::bigint, 6::bigint, 0::bigint, 0::bigint, 0::bigint, 0::bigint, true, true, true)$$,
    'totals: 4 runs (the refused calls do not count), 6 events, no cancellation; last_run_* '
    'describe run D');

select is((select e.xid >= r.horizon_xid from meter.events e, runs r
           where e.customer_id = (select cust from fx) and e.idempotency_key = 'own' and r.name = 'D'),
          true, 'this transaction''s own event stays at or above the horizon, not folded');

-- ---------------------------------------------------------------------------------------------
-- Never backwards. A horizon below the watermark cannot happen in a healthy cluster (a later
-- snapshot's xmin is never lower): it means transaction ids from another cluster (a restore). The
-- run refuses loudly instead of skipping events. Emulated by setting the watermark past any
-- horizon this transaction can see.
-- ---------------------------------------------------------------------------------------------
update meter.rollup_watermark
set position_xid = (pg_catalog.pg_current_xact_id()::text::bigint + 1000)::text::xid8, position_id = 7;

select throws_like($$select * from meter.rollup_run()$$,
    'the rollup watermark % is ahead of this cluster''s oldest running transaction %',
    'a watermark ahead of the horizon stops the run with an error (55000), folding nothing');

select * from finish();
rollback;
