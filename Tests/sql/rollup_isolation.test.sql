-- meter.rollup_run() refuses to run outside READ COMMITTED (SQLSTATE 0A000): its design needs a
-- fresh snapshot per statement (the meter versions and cancellations it reads after taking the lock
-- must be the latest). Called in a REPEATABLE READ transaction it raises before doing anything:
-- the watermark row, the rollups and the cancellations stay as they were, the events stay pending.
--
-- Emulated history (see rollup_run.test.sql): a committed event and a cancellation waiting to be
-- folded, with an explicit xid of a finished transaction. The suite runs on a freshly migrated
-- database (checked first).
begin transaction isolation level repeatable read;
select plan(9);

select is(pg_catalog.current_setting('transaction_isolation'), 'repeatable read',
          'this transaction runs at REPEATABLE READ');

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');

update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-ri-a') as cust,
       meter.meter_upsert('tap.ri.calls') as m_calls;

-- Work for a run: two committed events (transaction 100), one of them cancelled.
-- (stored as ingest stores them: each key in meter.event_keys, then its event)
with e as materialized (
    select k, pg_catalog.nextval('meter.event_ids') as id from (values ('e1'), ('e2')) v(k)
),
keys as (
    insert into meter.event_keys (customer_id, idempotency_key, event_id, occurred_at)
    select (select cust from fx), e.k, e.id, '2024-03-10 10:00+00' from e
)
insert into meter.events (id, customer_id, meter_id, idempotency_key, occurred_at, xid)
select e.id, (select cust from fx), (select m_calls from fx), e.k, '2024-03-10 10:00+00', '100'
from e;
select meter.event_cancel('[{"customer": "tap-ri-a", "idempotency_key": "e1"}]');

create temp table wm0 as select * from meter.rollup_watermark;

select results_eq(
    $$select pending_events, pending_cancellations from meter.rollup_lag$$,
    $$values (2::bigint, 1::bigint)$$,
    'setup: two events and one cancellation are waiting for a run');

select throws_ok($$select * from meter.rollup_run()$$, '0A000',
                 'meter.rollup_run() must run in a READ COMMITTED transaction, not repeatable read',
                 'rollup_run refuses to run in a REPEATABLE READ transaction (0A000), naming the level');

select throws_ok($$select * from meter.rollup_run(10)$$, '0A000', null,
                 'and so it does with an explicit max_events');

select results_eq(
    $$select * from meter.rollup_watermark$$,
    $$select * from wm0$$,
    'the watermark row is unchanged: position, counters and last-run figures');

select is_empty($$select 1 from meter.rollup_hourly where customer_id = (select cust from fx)$$,
                'nothing was folded into meter.rollup_hourly');

select is_empty($$select 1 from meter.event_cancellations where rolled_up_at is not null$$,
                'the cancellation was not marked rolled up');

select results_eq(
    $$select pending_events, pending_cancellations from meter.rollup_lag$$,
    $$values (2::bigint, 1::bigint)$$,
    'the events and the cancellation are still pending');

select * from finish();
rollback;
