-- meter.rollup_lag: one row saying how far the rollups are behind and why. pending_events counts
-- the events past the watermark, waiting_on_horizon those of them at or above the horizon
-- (waiting for an older transaction, here this very one, not for the rollup), pending_cancellations
-- the cancellations not subtracted yet, lag_seconds the age of the oldest of those (0 when nothing
-- is pending); the watermark columns repeat meter.rollup_watermark.
-- The transaction holding the horizon back (horizon_held_by_pid, ...) is another session's by
-- definition; here it is this one, which the view leaves out: those columns stay null. A real
-- blocker needs a second session (Swift tests).
--
-- Emulated history (see rollup_run.test.sql): committed events get explicit xids of finished
-- transactions; for events "committed after a run", the watermark is first set back to the horizon
-- that run is taken to have had. The suite runs on a freshly migrated database (checked first).
begin;
select plan(11);

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');

select columns_are('meter', 'rollup_lag',
    array['position_xid', 'position_id', 'horizon_xid', 'lag_seconds', 'pending_events', 'waiting_on_horizon',
          'pending_cancellations', 'last_run_at', 'last_run_events',
          'last_run_cancellations', 'last_run_ms', 'runs_total', 'events_total', 'cancellations_total',
          'horizon_held_by_pid', 'horizon_state', 'horizon_xact_start', 'horizon_query', 'shards']::name[],
    'rollup_lag has exactly its documented columns');

update meter.rollup_watermark set position_xid = '0', position_id = 0;

select meter.customer_upsert('tap-rl-a');
select meter.meter_upsert('tap.rl.calls');

\ir support/fixtures.sql
create function pg_temp.lag_event(p_key text, p_xid xid8, p_received_at timestamptz default pg_catalog.now())
returns bigint language sql
as $$ select pg_temp.put('tap-rl-a', 'tap.rl.calls', p_key, '2024-03-10 10:00+00', p_xid => p_xid, p_received_at => p_received_at) $$;

select pg_temp.lag_event('e1', '100', pg_catalog.now() - interval '2 days');
select pg_temp.lag_event('e2', '100', pg_catalog.now() - interval '2 days');

select results_eq(
    $$select pending_events, waiting_on_horizon, pending_cancellations, lag_seconds >= 172800 from meter.rollup_lag$$,
    $$values (2::bigint, 0::bigint, 0::bigint, true)$$,
    'before a run: two committed events pending, none waiting on the horizon, lag = their age (2 days)');

-- ---------------------------------------------------------------------------------------------
-- All caught up.
-- ---------------------------------------------------------------------------------------------
create temp table run1 as select * from meter.rollup_run();
create temp table wm1 as select * from meter.rollup_watermark;

select results_eq(
    $$select lag_seconds, pending_events, waiting_on_horizon, pending_cancellations
      from meter.rollup_lag$$,
    $$values (0::numeric, 0::bigint, 0::bigint, 0::bigint)$$,
    'after the run: nothing pending, lag_seconds 0');

select results_eq(
    $$select l.position_xid, l.position_id, l.last_run_at, l.last_run_events, l.last_run_cancellations, l.last_run_ms,
             l.runs_total, l.events_total, l.cancellations_total
      from meter.rollup_lag l$$,
    $$select w.position_xid, w.position_id, w.last_run_at, w.last_run_events, w.last_run_cancellations, w.last_run_ms,
             w.runs_total, w.events_total, w.cancellations_total
      from meter.rollup_watermark w$$,
    'the watermark columns are meter.rollup_watermark''s');

select ok((select horizon_xid <= pg_catalog.pg_current_xact_id() from meter.rollup_lag),
          'horizon_xid is the current snapshot''s xmin: at most this transaction''s xid');

-- ---------------------------------------------------------------------------------------------
-- An event of this transaction: pending, and waiting on the horizon (on this very transaction).
-- ---------------------------------------------------------------------------------------------
select meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
    'customer', 'tap-rl-a', 'meter', 'tap.rl.calls', 'idempotency_key', 'own', 'occurred_at', pg_catalog.now())));
update meter.events set received_at = pg_catalog.now() - interval '1 hour' where idempotency_key = 'own';

select results_eq(
    $$select pending_events, waiting_on_horizon,
             lag_seconds between 3600 and 3600 + extract(epoch from pg_catalog.clock_timestamp() - pg_catalog.now()) + 1
      from meter.rollup_lag$$,
    $$values (1::bigint, 1::bigint, true)$$,
    'this transaction''s event is pending and waiting on the horizon; lag_seconds is its age');

select results_eq(
    $$select horizon_held_by_pid, horizon_state, horizon_xact_start, horizon_query from meter.rollup_lag$$,
    $$values (null::integer, null::text, null::timestamptz, null::text)$$,
    'the horizon is this session''s own transaction, which is not reported as a blocker');

-- ---------------------------------------------------------------------------------------------
-- Committed events and a cancellation waiting for the rollup. Emulation: run 1 is taken to have
-- run at horizon 200; transaction 250 then committed an event.
-- ---------------------------------------------------------------------------------------------
update meter.rollup_watermark set position_xid = '200', position_id = 0;
select pg_temp.lag_event('e3', '250', pg_catalog.now() - interval '30 minutes');
select meter.event_cancel('[{"customer": "tap-rl-a", "idempotency_key": "e1"}]');
update meter.event_cancellations set cancelled_at = pg_catalog.now() - interval '3 hours'
where event_id = (select id from meter.events where idempotency_key = 'e1');

select results_eq(
    $$select pending_events, waiting_on_horizon, pending_cancellations,
             lag_seconds between 10800 and 10800 + extract(epoch from pg_catalog.clock_timestamp() - pg_catalog.now()) + 1
      from meter.rollup_lag$$,
    $$values (2::bigint, 1::bigint, 1::bigint, true)$$,
    'a committed event past the watermark is pending but not waiting; a pending cancellation counts, '
    'and lag_seconds is the age of the oldest pending thing (the 3-hour-old cancellation)');

create temp table run2 as select * from meter.rollup_run();

select results_eq(
    $$select r.events_folded, r.cancellations_folded, l.pending_events, l.waiting_on_horizon, l.pending_cancellations,
             l.lag_seconds between 3600 and 3600 + extract(epoch from pg_catalog.clock_timestamp() - pg_catalog.now()) + 1
      from run2 r, meter.rollup_lag l$$,
    $$values (1::bigint, 1::bigint, 1::bigint, 1::bigint, 0::bigint, true)$$,
    'after the next run only this transaction''s event is left, still waiting on the horizon');

select results_eq(
    $$select l.runs_total - wm1.runs_total, l.events_total - wm1.events_total,
             l.cancellations_total - wm1.cancellations_total, l.last_run_events, l.last_run_cancellations
      from meter.rollup_lag l, wm1$$,
    $$values (1::bigint, 1::bigint, 1::bigint, 1::bigint, 1::bigint)$$,
    'the totals count run 2, and the last run''s figures are run 2''s');

select * from finish();
rollback;
