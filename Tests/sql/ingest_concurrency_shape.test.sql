-- The shape that makes meter.event_ingest() safe under concurrency, checked in one session:
--   * exactly-once is the PRIMARY KEY (customer_id, idempotency_key) of meter.event_keys, not a
--     lookup (meter.events is partitioned by month and cannot hold that key: decision 121);
--   * a row that another request stored first (simulated here by inserting it directly, key and
--     event, as a concurrent winner's committed rows would appear to step 2) is reported
--     duplicate/conflict with ITS id, never accepted a second time;
--   * a rolled-back attempt does not consume the key.
-- Real two-session interleavings (loser waits on the winner's commit / rollback) need an
-- isolation spec with explicit permutations; they are not expressible inside one pgTAP transaction.
begin;
select plan(13);

create temp table fx as
select meter.customer_upsert('tap-cc-cust') as cust,
       meter.meter_upsert('tap.cc.calls')   as m_calls,
       meter.meter_upsert('tap.cc.bytes', 'sum') as m_bytes;

-- ---------------------------------------------------------------------------------------------
-- The guarantee is a constraint usable as an ON CONFLICT arbiter.
-- ---------------------------------------------------------------------------------------------
select col_is_pk('meter', 'event_keys', array['customer_id', 'idempotency_key']::name[],
                 'meter.event_keys has the PRIMARY KEY (customer_id, idempotency_key)');

select results_eq(
    $$select conrelid::regclass::text collate "default", conname::text collate "default", contype::text, condeferrable
      from pg_catalog.pg_constraint
      where conrelid in ('meter.events'::regclass, 'meter.event_keys'::regclass) and contype in ('p', 'u')
      order by conname$$,
    $$values ('event_keys', 'event_keys_pkey', 'p', false), ('events', 'events_pkey', 'p', false)$$,
    'the only unique constraints: the immediate (non-deferrable) key of event_keys and the events'' (id, occurred_at)');

select is_indexed('meter', 'event_keys', array['customer_id', 'idempotency_key']::name[],
                  'the idempotency key is backed by an index on (customer_id, idempotency_key)');

select hasnt_fk('meter', 'events',
                'meter.events has no foreign keys: they would lock parent rows on every insert (0001_init.sql)');

-- ---------------------------------------------------------------------------------------------
-- A second row for the same key is impossible, whoever tries.
-- ---------------------------------------------------------------------------------------------
with e as materialized (
    select pg_catalog.nextval('meter.event_ids') as id
),
k as (
    insert into meter.event_keys (customer_id, idempotency_key, event_id, occurred_at)
    select (select cust from fx), 'tap-cc-winner', e.id, pg_catalog.date_trunc('second', pg_catalog.now()) - interval '1 minute' from e
)
insert into meter.events (id, customer_id, meter_id, idempotency_key, occurred_at, value, properties)
select e.id, (select cust from fx), (select m_bytes from fx), 'tap-cc-winner',
       pg_catalog.date_trunc('second', pg_catalog.now()) - interval '1 minute', 42, '{"src": "winner"}'
from e;

create temp table winner as
select id, occurred_at from meter.events where customer_id = (select cust from fx) and idempotency_key = 'tap-cc-winner';

select throws_ok(
    $$insert into meter.event_keys (customer_id, idempotency_key, event_id, occurred_at)
      values ((select cust from fx), 'tap-cc-winner', pg_catalog.nextval('meter.event_ids'), pg_catalog.now())$$,
    '23505', 'duplicate key value violates unique constraint "event_keys_pkey"',
    'a direct second insert of a used (customer, key) fails with 23505');

-- ---------------------------------------------------------------------------------------------
-- The "someone else stored it first" path: step 1 inserts nothing, step 2 finds the other row.
-- ---------------------------------------------------------------------------------------------
create temp table run_same as
select * from meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
    'customer', 'tap-cc-cust', 'meter', 'tap.cc.bytes', 'idempotency_key', 'tap-cc-winner',
    'occurred_at', (select occurred_at from winner), 'value', '42.000',
    'properties', '{"src": "winner"}'::jsonb)));

select results_eq(
    'select ord, status, event_id, code from run_same',
    $$values (0, 'duplicate'::text, (select id from winner), null::text)$$,
    'same content as the winner''s row: duplicate carrying the winner''s id');

create temp table run_diff as
select * from meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
    'customer', 'tap-cc-cust', 'meter', 'tap.cc.bytes', 'idempotency_key', 'tap-cc-winner',
    'occurred_at', (select occurred_at from winner), 'value', '43',
    'properties', '{"src": "winner"}'::jsonb)));

select results_eq(
    'select ord, status, event_id, code from run_diff',
    $$values (0, 'conflict'::text, (select id from winner), 'idempotency_key_conflict'::text)$$,
    'different content from the winner''s row: conflict carrying the winner''s id');

select results_eq(
    $$select id, value, properties from meter.events
      where customer_id = (select cust from fx) and idempotency_key = 'tap-cc-winner'$$,
    $$values ((select id from winner), 42::numeric, '{"src": "winner"}'::jsonb)$$,
    'still exactly one row for the key, the winner''s, unchanged');

select results_eq(
    $$select verdict from meter.event_redeliveries where event_id = (select id from winner) order by id$$,
    $$values ('duplicate'::text), ('conflict')$$,
    'both losing deliveries are audited against the winner''s row');

-- ---------------------------------------------------------------------------------------------
-- A rolled-back attempt (a winner that aborts) leaves the key free for the next delivery.
-- ---------------------------------------------------------------------------------------------
savepoint attempt;
-- The attempt itself must be accepted (a failed DO aborts the script, which pg_prove reports).
do $$
begin
    if (select status from meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
            'customer', 'tap-cc-cust', 'meter', 'tap.cc.calls', 'idempotency_key', 'tap-cc-aborted',
            'occurred_at', pg_catalog.now())))) is distinct from 'accepted' then
        raise exception 'setup: the attempt that is about to be rolled back was not accepted';
    end if;
end
$$;
rollback to savepoint attempt;

select is((select pg_catalog.count(*) from meter.events
           where customer_id = (select cust from fx) and idempotency_key = 'tap-cc-aborted'),
          0::bigint, 'after the attempt rolled back, the key is not stored');

select results_eq(
    $$select ord, status from meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
          'customer', 'tap-cc-cust', 'meter', 'tap.cc.calls', 'idempotency_key', 'tap-cc-aborted',
          'occurred_at', pg_catalog.now())))$$,
    $$values (0, 'accepted'::text)$$,
    'the next delivery of a key whose first attempt rolled back is accepted, not duplicate');

-- ---------------------------------------------------------------------------------------------
-- Function properties the design relies on.
-- ---------------------------------------------------------------------------------------------
select volatility_is('meter', 'event_ingest', array['jsonb', 'interval', 'interval', 'bytea']::name[], 'volatile',
                     'event_ingest is VOLATILE (each call sees fresh snapshots per statement)');

select is_definer('meter', 'event_ingest_arrays',
                  array['text[]', 'text[]', 'text[]', 'timestamp with time zone[]', 'numeric[]', 'jsonb[]', 'interval', 'interval', 'bytea']::name[],
                  'event_ingest_arrays is SECURITY DEFINER (event_ingest, its JSON form, runs as its caller and calls it)');

select * from finish();
rollback;
