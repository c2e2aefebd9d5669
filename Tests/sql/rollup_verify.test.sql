-- meter.rollup_verify(from, to): empty when the rollups hold exactly the events behind the
-- watermark, net of the cancellations subtracted; events and cancellations not yet rolled up are
-- lag, not differences. Every kind of damage lists its hour: a tampered count, sum or max in
-- meter.rollup_hourly, a missing rollup row, a tampered, missing or extra value in
-- meter.rollup_hourly_unique, an event behind the watermark that never made it into the rollups,
-- a cancellation marked rolled up but not subtracted. from and to are widened to whole UTC hours
-- (the session runs in a time zone 5:45 off UTC).
-- Each damage is repaired before the next, so that each check lists exactly one kind.
--
-- Emulated history (see rollup_run.test.sql): events get explicit xids of finished transactions
-- below the horizon. The suite runs on a freshly migrated database (checked first).
begin;
select plan(19);

set local timezone = 'Asia/Kathmandu';

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');

update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-rv-a')                          as cust,
       meter.meter_upsert('tap.rv.calls')                         as m_calls,
       meter.meter_upsert('tap.rv.peak', 'max')                   as m_peak,
       meter.meter_upsert('tap.rv.users', 'unique_count', 'user') as m_users;

\ir support/fixtures.sql
create function pg_temp.event(p_meter text, p_key text, p_occurred_at timestamptz, p_value numeric,
                               p_properties jsonb, p_xid xid8)
returns bigint language sql
as $$ select pg_temp.put('tap-rv-a', p_meter, p_key, p_occurred_at, p_value, p_properties, p_xid) $$;

-- What rollup_verify reports for this test's customer, meters by code.
create function pg_temp.diff(p_from timestamptz, p_to timestamptz)
returns table (meter text, hour timestamptz, rollup_events bigint, raw_events bigint, rollup_quantity numeric,
               raw_quantity numeric, rollup_max numeric, raw_max numeric, unique_values_differing bigint)
language sql
as $$
    select m.code, v.hour, v.rollup_events, v.raw_events, v.rollup_quantity, v.raw_quantity,
           v.rollup_max, v.raw_max, v.unique_values_differing
    from meter.rollup_verify(p_from, p_to) v join meter.meters m on m.id = v.meter_id
    where v.customer_id = (select cust from fx)
    order by m.code, v.hour
$$;

select pg_temp.event('tap.rv.calls', 'c1', '2024-03-10 10:05+00', 1, '{}', '100');
select pg_temp.event('tap.rv.calls', 'c2', '2024-03-10 10:10+00', 1, '{}', '100');
select pg_temp.event('tap.rv.calls', 'c3', '2024-03-10 11:20+00', 1, '{}', '100');
select pg_temp.event('tap.rv.calls', 'c4', '2024-03-10 12:00+00', 1, '{}', '100');
select pg_temp.event('tap.rv.peak',  'p1', '2024-03-10 10:15+00', 4, '{}', '100');
select pg_temp.event('tap.rv.peak',  'p2', '2024-03-10 10:20+00', 6, '{}', '100');
select pg_temp.event('tap.rv.users', 'u1', '2024-03-10 10:25+00', 1, '{"user": "ann"}', '100');
select pg_temp.event('tap.rv.users', 'u2', '2024-03-10 10:30+00', 1, '{"user": "bob"}', '100');
select pg_temp.event('tap.rv.users', 'u3', '2024-03-10 10:35+00', 1, '{"user": "ann"}', '100');
select meter.event_cancel('[{"customer": "tap-rv-a", "idempotency_key": "c4"}]');

create temp table run1 as select * from meter.rollup_run();

-- ---------------------------------------------------------------------------------------------
-- Consistent.
-- ---------------------------------------------------------------------------------------------
select results_eq($$select events_folded, cancellations_folded from run1$$, $$values (9::bigint, 1::bigint)$$,
                  'setup: 9 events folded, c4''s cancellation subtracted');

select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'consistent rollups: rollup_verify is empty (c4''s hour, all cancelled, included)');

-- Lag is not a difference: an event of this transaction (not folded, above the horizon) and a
-- cancellation not subtracted yet.
select meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
    'customer', 'tap-rv-a', 'meter', 'tap.rv.calls', 'idempotency_key', 'own', 'occurred_at', pg_catalog.now())));
select meter.event_cancel('[{"customer": "tap-rv-a", "idempotency_key": "c3"}]');

select is_empty($$select * from meter.rollup_verify('2000-01-01 00:00+00', '2100-01-01 00:00+00')$$,
                'an event not folded yet and a cancellation not subtracted yet are lag, not differences');

-- ---------------------------------------------------------------------------------------------
-- rollup_hourly tampered with.
-- ---------------------------------------------------------------------------------------------
create temp table saved as select * from meter.rollup_hourly where customer_id = (select cust from fx);

update meter.rollup_hourly set event_count = event_count + 1
where customer_id = (select cust from fx) and meter_id = (select m_calls from fx) and hour = '2024-03-10 10:00+00';
update meter.rollup_hourly set max_value = 5
where customer_id = (select cust from fx) and meter_id = (select m_peak from fx);
update meter.rollup_hourly set quantity = 2
where customer_id = (select cust from fx) and meter_id = (select m_calls from fx) and hour = '2024-03-10 11:00+00';

select results_eq(
    $$select * from pg_temp.diff('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
    $$values ('tap.rv.calls'::text, '2024-03-10 10:00+00'::timestamptz, 3::bigint, 2::bigint, 2::numeric, 2::numeric, 1::numeric, 1::numeric, 0::bigint),
             ('tap.rv.calls', '2024-03-10 11:00+00', 1, 1, 2, 1, 1, 1, 0),
             ('tap.rv.peak',  '2024-03-10 10:00+00', 2, 2, 10, 10, 5, 6, 0)$$,
    'a wrong event count, sum or max lists its hour, with the rollup''s and the raw figures');

select results_eq(
    $$select customer_id, meter_id, hour from meter.rollup_verify('2024-03-10 10:30+00', '2024-03-10 10:45+00')
      where customer_id = (select cust from fx) order by meter_id$$,
    $$values ((select cust from fx), (select m_calls from fx), '2024-03-10 10:00+00'::timestamptz),
             ((select cust from fx), (select m_peak from fx), '2024-03-10 10:00+00')$$,
    'from and to are widened to whole UTC hours: [10:30, 10:45) checks the hour 10:00-11:00 only');

select results_eq(
    $$select hour from pg_temp.diff('2024-03-10 10:59:59+00', '2024-03-10 11:00:01+00') where meter = 'tap.rv.calls'$$,
    $$values ('2024-03-10 10:00+00'::timestamptz), ('2024-03-10 11:00+00')$$,
    '[10:59:59, 11:00:01) widens to [10:00, 12:00)');

select is_empty($$select * from pg_temp.diff('2024-03-10 12:00+00', '2024-03-11 00:00+00')$$,
                'hours outside [from, to) are not checked');

delete from meter.rollup_hourly
where customer_id = (select cust from fx) and meter_id = (select m_calls from fx) and hour = '2024-03-10 11:00+00';

select results_eq(
    $$select * from pg_temp.diff('2024-03-10 11:00+00', '2024-03-10 12:00+00')$$,
    $$values ('tap.rv.calls'::text, '2024-03-10 11:00+00'::timestamptz, null::bigint, 1::bigint, null::numeric, 1::numeric, null::numeric, 1::numeric, 0::bigint)$$,
    'a missing rollup row lists its hour (rollup figures null)');

delete from meter.rollup_hourly where customer_id = (select cust from fx);
insert into meter.rollup_hourly select * from saved;

select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'repaired: empty again');

-- ---------------------------------------------------------------------------------------------
-- rollup_hourly_unique tampered with.
-- ---------------------------------------------------------------------------------------------
create temp table saved_unique as select * from meter.rollup_hourly_unique where customer_id = (select cust from fx);

update meter.rollup_hourly_unique set event_count = 1
where customer_id = (select cust from fx) and unique_value = 'ann';

select results_eq(
    $$select * from pg_temp.diff('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
    $$values ('tap.rv.users'::text, '2024-03-10 10:00+00'::timestamptz, 3::bigint, 3::bigint, 3::numeric, 3::numeric, 1::numeric, 1::numeric, 1::bigint)$$,
    'a wrong count of one unique value lists its hour (1 value differing; count, sum and max agree)');

delete from meter.rollup_hourly_unique where customer_id = (select cust from fx) and unique_value = 'bob';
insert into meter.rollup_hourly_unique (customer_id, meter_id, hour, value_hash, unique_value, event_count) values
    ((select cust from fx), (select m_users from fx), '2024-03-10 10:00+00', pg_catalog.sha256('zed'), 'zed', 1),
    ((select cust from fx), (select m_users from fx), '2024-03-10 15:00+00', pg_catalog.sha256('zed'), 'zed', 1);

select results_eq(
    $$select meter, hour, rollup_events, raw_events, unique_values_differing
      from pg_temp.diff('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
    $$values ('tap.rv.users'::text, '2024-03-10 10:00+00'::timestamptz, 3::bigint, 3::bigint, 3::bigint),
             ('tap.rv.users', '2024-03-10 15:00+00', null, 0, 1)$$,
    'a missing value and extra values are differences too, also in an hour without any rollup row');

delete from meter.rollup_hourly_unique where customer_id = (select cust from fx);
insert into meter.rollup_hourly_unique select * from saved_unique;

select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'repaired: empty again');

-- ---------------------------------------------------------------------------------------------
-- An event behind the watermark that the rollups never got. Emulated: transaction 150, finished
-- long before the run that moved the watermark past it, with events the run did not fold (the
-- kind of bug rollup_verify is there to catch).
-- ---------------------------------------------------------------------------------------------
create temp table skipped as
select pg_temp.event('tap.rv.calls', 's1', '2024-03-10 11:40+00', 1, '{}', '150') as id
union all
select pg_temp.event('tap.rv.users', 's2', '2024-03-10 16:00+00', 1, '{"user": "dan"}', '150');

select results_eq(
    $$select meter, hour, rollup_events, raw_events, rollup_quantity, raw_quantity, unique_values_differing
      from pg_temp.diff('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
    $$values ('tap.rv.calls'::text, '2024-03-10 11:00+00'::timestamptz, 1::bigint, 2::bigint, 1::numeric, 2::numeric, 0::bigint),
             ('tap.rv.users', '2024-03-10 16:00+00', null, 1, null, 1, 1)$$,
    'events behind the watermark missing from the rollups list their hours (with the missing unique value)');

delete from meter.events where id in (select id from skipped);

-- ---------------------------------------------------------------------------------------------
-- A cancellation marked rolled up that was never subtracted.
-- ---------------------------------------------------------------------------------------------
insert into meter.event_cancellations (event_id, rolled_up_at)
select id, pg_catalog.now() from meter.events where customer_id = (select cust from fx) and idempotency_key = 'p2';

select results_eq(
    $$select * from pg_temp.diff('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
    $$values ('tap.rv.peak'::text, '2024-03-10 10:00+00'::timestamptz, 2::bigint, 1::bigint, 10::numeric, 4::numeric, 6::numeric, 4::numeric, 0::bigint)$$,
    'a cancellation marked rolled up but not subtracted lists its hour');

-- Now let the rollup subtract it for real: rolled_up_at back to null, and a run.
update meter.event_cancellations set rolled_up_at = null
where event_id = (select id from meter.events where customer_id = (select cust from fx) and idempotency_key = 'p2');
create temp table run2 as select * from meter.rollup_run();

select results_eq($$select events_folded, cancellations_folded from run2$$, $$values (0::bigint, 2::bigint)$$,
                  'setup: the next run subtracts p2''s and c3''s cancellations');

select is_empty($$select * from meter.rollup_verify('-infinity', 'infinity')$$,
                'all repaired and rolled up: rollup_verify over all time is empty');

-- ---------------------------------------------------------------------------------------------
-- Function properties.
-- ---------------------------------------------------------------------------------------------
select volatility_is('meter', 'rollup_verify', array['timestamp with time zone', 'timestamp with time zone']::name[], 'stable',
                     'rollup_verify is STABLE (one statement, one snapshot)');
select is_definer('meter', 'rollup_verify', array['timestamp with time zone', 'timestamp with time zone']::name[],
                  'rollup_verify is SECURITY DEFINER (analysts cannot read raw events themselves)');

select * from finish();
rollback;
