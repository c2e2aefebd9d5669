-- meter.rollup_lag_seconds(): how stale the rollups are, in seconds (meter.rollup_lag.lag_seconds,
-- GET /v1/usage, the serve loop's gauge). 0 when nothing is pending; otherwise the age of the
-- oldest of
--   * the first pending event in the rollup's own (xid, id) order: its received_at, not the
--     smallest received_at of all pending events;
--   * the first pending event at or above the horizon (here: this transaction's own), which may be
--     older than the first one below it;
--   * the oldest cancellation not rolled up yet (its cancelled_at).
-- Ages are measured against clock_timestamp(); the timestamps are set relative to now() (this
-- transaction's start), so each expected age X is checked as X <= lag <= X + the time elapsed
-- since the start of the transaction + 1 s.
-- The 1,000,000 cap of meter._rollup_pending() (the rollup_lag counts) is not tested: it takes
-- over a million events.
--
-- Emulated history (see rollup_run.test.sql): committed events get explicit xids of finished
-- transactions; for events "committed after a run", the watermark is first set back to the
-- horizon that run is taken to have had. The suite runs on a freshly migrated database (checked
-- first).
begin;
select plan(20);

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
select is_empty($$select 1 from meter.event_cancellations$$,
                'precondition: no cancellations');
select ok(pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()) > '300'::xid8,
          'precondition: the horizon is above the emulated xids (100 to 250)');

update meter.rollup_watermark set position_xid = '0', position_id = 0;

select meter.customer_upsert('tap-ls-a');
select meter.meter_upsert('tap.ls.calls');

-- An event of tap-ls-a as the committed transaction p_xid stored it, received p_age ago.
\ir support/fixtures.sql
create function pg_temp.lag_event(p_key text, p_xid xid8, p_age interval)
returns bigint language sql
as $$ select pg_temp.put('tap-ls-a', 'tap.ls.calls', p_key, '2024-03-10 10:00+00', p_xid => p_xid, p_received_at => pg_catalog.now() - p_age) $$;

-- Is the lag p_seconds, give or take the time this transaction has run? (On failure, the
-- diagnostics show the actual value.)
create function pg_temp.lag_ok(p_seconds numeric, p_description text)
returns text
language plpgsql
volatile
as $$
declare
    v_lag  numeric := meter.rollup_lag_seconds();
    v_slop numeric := extract(epoch from pg_catalog.clock_timestamp() - pg_catalog.now()) + 1;
begin
    if v_lag between p_seconds and p_seconds + v_slop then
        return ok(true, p_description);
    end if;
    return ok(false, p_description) || E'\n'
        || diag(pg_catalog.format('lag_seconds: %s, expected between %s and %s', v_lag, p_seconds, p_seconds + v_slop));
end;
$$;

create function pg_temp.cancel(p_key text, p_age interval)
returns text
language plpgsql
as $$
declare
    v_status text;
begin
    select status into v_status from meter.event_cancel(pg_catalog.jsonb_build_array(
        pg_catalog.jsonb_build_object('customer', 'tap-ls-a', 'idempotency_key', p_key)));
    update meter.event_cancellations set cancelled_at = pg_catalog.now() - p_age
    where event_id = (select id from meter.events where idempotency_key = p_key);
    return v_status;
end;
$$;

-- ---------------------------------------------------------------------------------------------
-- Nothing pending.
-- ---------------------------------------------------------------------------------------------
select is(meter.rollup_lag_seconds(), 0::numeric, 'nothing pending: 0');

-- ---------------------------------------------------------------------------------------------
-- Committed events: the first in (xid, id) order counts. ea is stored first (lower id) by
-- transaction 101 and received 5 hours ago; eb is stored after it (higher id) by transaction 100,
-- which took its xid earlier, and received 1 hour ago.
-- ---------------------------------------------------------------------------------------------
select pg_temp.lag_event('ea', '101', interval '5 hours');
select pg_temp.lag_event('eb', '100', interval '1 hour');

select pg_temp.lag_ok(3600,
          'pending events: the age of the first in (xid, id) order (eb, xid 100: 1 hour), '
          'not of the oldest received_at (ea, 5 hours) nor of the lowest id (ea)');

-- The watermark's id matters within an xid: with eb behind it, ea is the first pending event.
update meter.rollup_watermark
set position_xid = '100', position_id = (select id from meter.events where idempotency_key = 'eb') + 1;
select pg_temp.lag_ok(18000,
          'with the watermark past (100, eb), the first pending event is ea: 5 hours');

update meter.rollup_watermark set position_xid = '0', position_id = 0;
create temp table run1 as select * from meter.rollup_run();

select results_eq($$select events_folded from run1$$, $$values (2::bigint)$$,
                  'setup: run 1 folds both events');
select is(meter.rollup_lag_seconds(), 0::numeric, 'everything folded: 0 again');

-- ---------------------------------------------------------------------------------------------
-- An event at or above the horizon: this transaction's own, received 2 hours ago.
-- ---------------------------------------------------------------------------------------------
select meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
    'customer', 'tap-ls-a', 'meter', 'tap.ls.calls', 'idempotency_key', 'own', 'occurred_at', pg_catalog.now())));
update meter.events set received_at = pg_catalog.now() - interval '2 hours' where idempotency_key = 'own';

select ok((select xid >= (select horizon_xid from run1) from meter.events where idempotency_key = 'own'),
          'setup: this transaction''s event sits at or above the horizon');
select pg_temp.lag_ok(7200,
          'only an event at or above the horizon pending: its age (2 hours)');

-- Committed after run 1 (taken to have run at horizon 200): transaction 250, 30 minutes ago. It
-- comes first in (xid, id) order, but this transaction's event is older.
update meter.rollup_watermark set position_xid = '200', position_id = 0;
select pg_temp.lag_event('ec', '250', interval '30 minutes');

select pg_temp.lag_ok(7200,
          'the first event at or above the horizon is older than the first pending one (ec, 30 minutes): '
          'its age (2 hours) counts');

update meter.events set received_at = pg_catalog.now() - interval '10 minutes' where idempotency_key = 'own';
select pg_temp.lag_ok(1800,
          'once it is younger (10 minutes), the first pending event''s age counts (ec, 30 minutes)');

-- ---------------------------------------------------------------------------------------------
-- Pending cancellations: the oldest counts when it is older than the events.
-- ---------------------------------------------------------------------------------------------
select is(pg_temp.cancel('eb', interval '1 minute'), 'cancelled', 'setup: eb is cancelled, 1 minute ago');
select pg_temp.lag_ok(1800,
          'a pending cancellation younger than the first pending event: the event''s age (30 minutes)');

select is(pg_temp.cancel('ea', interval '4 hours'), 'cancelled', 'setup: ea is cancelled, 4 hours ago');
select pg_temp.lag_ok(14400,
          'the oldest pending cancellation (ea, 4 hours) is older than every pending event: its age');

-- ---------------------------------------------------------------------------------------------
-- After a run: the cancellations are subtracted and ec is folded; only this transaction's event
-- (10 minutes) is left.
-- ---------------------------------------------------------------------------------------------
create temp table run2 as select * from meter.rollup_run();

select results_eq($$select events_folded, cancellations_folded from run2$$,
                  $$values (1::bigint, 2::bigint)$$,
                  'setup: run 2 folds ec and subtracts both cancellations');
select pg_temp.lag_ok(600,
          'rolled-up cancellations no longer count: the age of the event left (10 minutes)');

-- ---------------------------------------------------------------------------------------------
-- Function properties.
-- ---------------------------------------------------------------------------------------------
select function_returns('meter', 'rollup_lag_seconds', array[]::name[], 'numeric',
                        'rollup_lag_seconds returns numeric (seconds, 3 decimals)');
select volatility_is('meter', 'rollup_lag_seconds', array[]::name[], 'volatile',
                     'rollup_lag_seconds is VOLATILE (it reads clock_timestamp())');

select * from finish();
rollback;
