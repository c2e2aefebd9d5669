-- The billing sync outbox (0003_billing_sync): meter.rollup_run() enqueues the changed hours of
-- priced meters with their rollup revision, meter.billing_price_set() enqueues a meter's existing
-- hours, and the sync worker's side: meter.sync_claim() (what to send: absolute total per the
-- aggregation of the meter version in force at the hour, the Idempotency-Key
-- meter-<customer_id>-<meter_id>-<hour epoch>-r<revision>, unlinked pairs skipped, a claimed hour
-- never handed out twice, re-claimed after its lease with the very same request),
-- meter.sync_succeeded() (synced, or pending again when a newer revision arrived meanwhile; 'stale'
-- for a claim that is not the caller's), meter.sync_failed() (an uncertain send is repeated as is,
-- a definitive failure forgets it; backoff with equal jitter, capped; dead after max_attempts) and
-- meter.sync_retry().
--
-- Emulated history as in rollup_run.test.sql: events are stored with explicit xids of finished
-- transactions (100-102, then 200 and 210 for "committed after run n", the watermark being set back
-- first). Everything happens in one transaction, so now() is one instant: a lease expiry or an
-- elapsed backoff is emulated by moving claimed_at or next_attempt_at. The suite runs on a freshly
-- migrated database (checked first).
begin;
select plan(98);

-- The session's time zone must play no part (hours and keys are UTC / epoch based).
set local timezone = 'Asia/Kolkata';

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
select is_empty($$select 1 from meter.sync_outbox$$, 'precondition: the outbox is empty');

update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-so-a')                          as cust_a,
       meter.customer_upsert('tap-so-b')                          as cust_b,
       meter.meter_upsert('tap.so.calls')                         as m_calls,
       meter.meter_upsert('tap.so.bytes', 'sum')                  as m_bytes,
       meter.meter_upsert('tap.so.peak', 'max')                   as m_peak,
       meter.meter_upsert('tap.so.users', 'unique_count', 'user') as m_users,
       meter.meter_upsert('tap.so.mixed', 'count')                as m_mixed,
       meter.meter_upsert('tap.so.free')                          as m_free,
       pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC') + interval '1 hour'  as h1,
       pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC') + interval '2 hours' as h2;
-- tap.so.mixed counts events until h2, and sums their values from h2 on (version 2).
select meter.meter_upsert('tap.so.mixed', 'sum', null, null, null, (select h2 from fx));

-- An event as the committed transaction p_xid stored it.
\ir support/fixtures.sql

create function pg_temp.mid(p_meter text) returns bigint language sql
as $$ select id from meter.meters where code = p_meter $$;

-- The expected Idempotency-Key of tap-so-a's hour (given by its epoch, written out) at a revision.
create function pg_temp.k(p_meter text, p_epoch bigint, p_revision integer) returns text language sql
as $$ select 'meter-' || (select cust_a from fx) || '-' || pg_temp.mid(p_meter) || '-' || p_epoch || '-r' || p_revision $$;

-- The current claim token of one of tap-so-a's hours, and the worker's reports with it.
create function pg_temp.tok(p_meter text, p_hour timestamptz) returns bigint language sql
as $$
    select claim_token from meter.sync_outbox
    where customer_id = (select cust_a from fx) and meter_id = pg_temp.mid(p_meter) and hour = p_hour
$$;
create function pg_temp.ok(p_meter text, p_hour timestamptz) returns text language sql
as $$ select meter.sync_succeeded((select cust_a from fx), pg_temp.mid(p_meter), p_hour, pg_temp.tok(p_meter, p_hour)) $$;
create function pg_temp.fail(p_meter text, p_hour timestamptz, p_error text, p_definitive boolean,
                             p_max_attempts integer default 10, p_base interval default '1 second',
                             p_cap interval default '5 minutes') returns text language sql
as $$
    select meter.sync_failed((select cust_a from fx), pg_temp.mid(p_meter), p_hour, pg_temp.tok(p_meter, p_hour),
                             p_error, p_definitive, p_max_attempts, p_base, p_cap)
$$;

-- Every claim made, numbered, and the outbox, by name.
create temp table claims (n integer, customer_id bigint, meter_id bigint, hour timestamptz, revision bigint,
                          quantity numeric, idempotency_key text, subscription_item_id text,
                          claim_token bigint, attempts integer, lines jsonb);
create function pg_temp.claim(p_n integer, p_worker text, p_limit integer default 100,
                              p_lease interval default '60 seconds') returns bigint language sql
as $$
    with c as (insert into claims select p_n, s.* from meter.sync_claim(p_worker, p_limit, p_lease) s returning 1)
    select pg_catalog.count(*) from c
$$;
create temp view claimed as
select k.n, c.external_id as customer, m.code as meter, k.hour, k.revision, k.quantity, k.idempotency_key,
       k.subscription_item_id, k.attempts, k.claim_token
from claims k join meter.customers c on c.id = k.customer_id join meter.meters m on m.id = k.meter_id;

create temp view ob_all as
select c.external_id as customer, m.code as meter, o.*
from meter.sync_outbox o join meter.customers c on c.id = o.customer_id join meter.meters m on m.id = o.meter_id
where c.external_id like 'tap-so-%';
-- tap-so-a's hours (tap-so-b's is never linked, so never claimed).
create temp view ob as select * from ob_all where customer = 'tap-so-a';

-- ---------------------------------------------------------------------------------------------
-- Prices, then committed history (transactions 100-102), run 1.
-- ---------------------------------------------------------------------------------------------
select is(meter.billing_price_set('tap.so.calls', 'price_calls'), 0::bigint,
          'billing_price_set on a meter without hours enqueues nothing');
select meter.billing_price_set('tap.so.bytes', 'price_bytes');
select meter.billing_price_set('tap.so.users', 'price_users');
select meter.billing_price_set('tap.so.mixed', 'price_mixed');
-- tap.so.peak is priced after run 1; tap.so.free never.

select pg_temp.put('tap-so-a', 'tap.so.calls', 'c1', '2024-03-10 10:05+00', 5, '{}', '100');
select pg_temp.put('tap-so-a', 'tap.so.calls', 'c2', '2024-03-10 10:20+00', 5, '{}', '101');
select pg_temp.put('tap-so-a', 'tap.so.calls', 'c3', '2024-03-10 10:40+00', 5, '{}', '102');
select pg_temp.put('tap-so-b', 'tap.so.calls', 'c1', '2024-03-10 10:10+00', 1, '{}', '100');
select pg_temp.put('tap-so-a', 'tap.so.bytes', 'b1', '2024-03-10 10:15+00', 2.5, '{}', '100');
select pg_temp.put('tap-so-a', 'tap.so.bytes', 'b2', '2024-03-10 10:45+00', 0.000000000001, '{}', '101');
select pg_temp.put('tap-so-a', 'tap.so.peak', 'p1', '2024-03-10 10:10+00', 3, '{}', '100');
select pg_temp.put('tap-so-a', 'tap.so.peak', 'p2', '2024-03-10 10:20+00', 9, '{}', '101');
select pg_temp.put('tap-so-a', 'tap.so.peak', 'p3', '2024-03-10 10:50+00', 4, '{}', '102');
select pg_temp.put('tap-so-a', 'tap.so.peak', 'p4', '2024-03-10 11:15+00', 7, '{}', '100');
select pg_temp.put('tap-so-a', 'tap.so.users', 'u1', '2024-03-10 10:01+00', 1, '{"user": "ann"}', '100');
select pg_temp.put('tap-so-a', 'tap.so.users', 'u2', '2024-03-10 10:02+00', 1, '{"user": "bob"}', '100');
select pg_temp.put('tap-so-a', 'tap.so.users', 'u3', '2024-03-10 10:03+00', 1, '{"user": "ann"}', '101');
select pg_temp.put('tap-so-a', 'tap.so.users', 'u4', '2024-03-10 10:04+00', 1, '{"team": "x"}', '102');
select pg_temp.put('tap-so-a', 'tap.so.mixed', 'x1', (select h1 from fx) + interval '1 minute', 5, '{}', '100');
select pg_temp.put('tap-so-a', 'tap.so.mixed', 'x2', (select h1 from fx) + interval '2 minutes', 5, '{}', '101');
select pg_temp.put('tap-so-a', 'tap.so.mixed', 'x3', (select h2 from fx) + interval '1 minute', 5, '{}', '100');
select pg_temp.put('tap-so-a', 'tap.so.mixed', 'x4', (select h2 from fx) + interval '2 minutes', 5, '{}', '101');
select pg_temp.put('tap-so-a', 'tap.so.free', 'f1', '2024-03-10 10:30+00', 1, '{}', '100');

select results_eq($$select ran, events_folded, hours_touched from meter.rollup_run()$$,
                  $$values (true, 19::bigint, 9::bigint)$$,
                  'setup: run 1 folds the 19 events into 9 hours');

select results_eq(
    $$select customer, meter, hour, revision, synced_revision, state, attempts from ob_all order by customer, meter, hour$$,
    $$values ('tap-so-a'::text, 'tap.so.bytes'::text, '2024-03-10 10:00+00'::timestamptz, 1::bigint, 0::bigint, 'pending'::text, 0),
             ('tap-so-a', 'tap.so.calls', '2024-03-10 10:00+00', 1, 0, 'pending', 0),
             ('tap-so-a', 'tap.so.mixed', (select h1 from fx), 1, 0, 'pending', 0),
             ('tap-so-a', 'tap.so.mixed', (select h2 from fx), 1, 0, 'pending', 0),
             ('tap-so-a', 'tap.so.users', '2024-03-10 10:00+00', 1, 0, 'pending', 0),
             ('tap-so-b', 'tap.so.calls', '2024-03-10 10:00+00', 1, 0, 'pending', 0)$$,
    'run 1 enqueues every changed hour of the priced meters, pending at revision 1; '
    'the hours of unpriced meters (tap.so.peak, tap.so.free) are not enqueued');

select is_empty(
    $$select 1 from meter.sync_outbox o
      left join meter.rollup_hourly r using (customer_id, meter_id, hour)
      where o.revision is distinct from r.revision or o.next_attempt_at > pg_catalog.now()
         or o.unsynced_since is distinct from pg_catalog.now()
         or o.claim_token is not null or o.sending_key is not null$$,
    'each outbox row carries its rollup row''s revision, is due now, unsynced since the run, unclaimed');

-- ---------------------------------------------------------------------------------------------
-- Pricing a meter late enqueues the hours it already has.
-- ---------------------------------------------------------------------------------------------
select is(meter.billing_price_set('tap.so.peak', 'price_peak', '2024-03-10 11:00+00'), 1::bigint,
          'billing_price_set with since enqueues only the existing hours from since on (1)');
select results_eq($$select hour, revision, state from ob where meter = 'tap.so.peak'$$,
                  $$values ('2024-03-10 11:00+00'::timestamptz, 1::bigint, 'pending'::text)$$,
                  'tap.so.peak hour 11 is enqueued at its rollup revision, hour 10 is not');
select is(meter.billing_price_set('tap.so.peak', 'price_peak_v2'), 1::bigint,
          'pricing it again without since enqueues the remaining hour only (hour 11 is already there)');
select results_eq($$select hour, revision, state from ob where meter = 'tap.so.peak' order by hour$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 1::bigint, 'pending'::text),
                           ('2024-03-10 11:00+00', 1, 'pending')$$,
                  'both tap.so.peak hours are pending');
select is((select price_id from meter.billing_prices where meter_id = (select m_peak from fx)), 'price_peak_v2',
          'the price is replaced');
select throws_ok($$select meter.billing_price_set('tap.so.nope', 'price_x')$$, '22023', 'unknown meter tap.so.nope',
                 'billing_price_set refuses an unknown meter (22023)');
select throws_ok($$select meter.billing_price_set('tap.so.free', 'price-free')$$, '22023', null,
                 'billing_price_set refuses a price id with other characters than letters, digits, underscores (22023)');
select throws_ok($$select meter.billing_price_set('tap.so.free', null)$$, '22023', null,
                 'billing_price_set refuses a null price id (22023)');
select is_empty($$select 1 from meter.billing_prices where meter_id = (select m_free from fx)$$,
                'and a refused call prices nothing');

-- ---------------------------------------------------------------------------------------------
-- sync_claim: argument checks.
-- ---------------------------------------------------------------------------------------------
select throws_ok($$select * from meter.sync_claim(null)$$, '22023', 'worker must be a non-empty name',
                 'sync_claim refuses a null worker (22023)');
select throws_ok($$select * from meter.sync_claim('')$$, '22023', 'worker must be a non-empty name',
                 'sync_claim refuses an empty worker name (22023)');
select throws_ok($$select * from meter.sync_claim('w', 0)$$, '22023', 'limit must be a positive integer, got 0',
                 'sync_claim refuses limit 0 (22023)');
select throws_ok($$select * from meter.sync_claim('w', null)$$, '22023', 'limit must be a positive integer, got null',
                 'sync_claim refuses a null limit (22023)');
select throws_ok($$select * from meter.sync_claim('w', 1, interval '0')$$, '22023', 'lease must be a positive interval',
                 'sync_claim refuses a zero lease (22023)');
select throws_ok($$select * from meter.sync_claim('w', 1, interval '-5 seconds')$$, '22023', 'lease must be a positive interval',
                 'sync_claim refuses a negative lease (22023)');

-- ---------------------------------------------------------------------------------------------
-- Claim 1: nothing is linked yet, then tap-so-a's pairs are.
-- ---------------------------------------------------------------------------------------------
select is(pg_temp.claim(0, 'w0'), 0::bigint, 'with no subscription item linked, sync_claim hands out nothing');
select is((select pg_catalog.count(*) from ob_all where state <> 'pending' or attempts <> 0), 0::bigint,
          'and leaves every hour pending, attempts untouched');

select meter.billing_link_record((select cust_a from fx), null, 'cus_tap_so_a', 'sub_tap_so_a', null, null);
select meter.billing_link_record((select cust_a from fx), pg_temp.mid(code), 'cus_tap_so_a', 'sub_tap_so_a',
                                 'si_' || replace(code, '.', '_'), 'price_x')
from (values ('tap.so.calls'), ('tap.so.bytes'), ('tap.so.peak'), ('tap.so.users'), ('tap.so.mixed')) v(code);

select is(pg_temp.claim(1, 'w1'), 7::bigint, 'claim 1 hands out tap-so-a''s 7 hours; tap-so-b (unlinked) is skipped');

select results_eq(
    $$select customer, meter, hour, revision, quantity, subscription_item_id, attempts from claimed where n = 1
      order by meter, hour$$,
    $$values ('tap-so-a'::text, 'tap.so.bytes'::text, '2024-03-10 10:00+00'::timestamptz, 1::bigint, 2.500000000001::numeric, 'si_tap_so_bytes'::text, 1),
             ('tap-so-a', 'tap.so.calls', '2024-03-10 10:00+00', 1, 3,  'si_tap_so_calls', 1),
             ('tap-so-a', 'tap.so.mixed', (select h1 from fx),  1, 2,  'si_tap_so_mixed', 1),
             ('tap-so-a', 'tap.so.mixed', (select h2 from fx),  1, 10, 'si_tap_so_mixed', 1),
             ('tap-so-a', 'tap.so.peak',  '2024-03-10 10:00+00', 1, 9,  'si_tap_so_peak', 1),
             ('tap-so-a', 'tap.so.peak',  '2024-03-10 11:00+00', 1, 7,  'si_tap_so_peak', 1),
             ('tap-so-a', 'tap.so.users', '2024-03-10 10:00+00', 1, 2,  'si_tap_so_users', 1)$$,
    'quantity per aggregation, exact: count = events (3, not the sum 15), sum = 2.500000000001, '
    'max = 9 and 7, unique_count = distinct users (2 of 4 events); the meter version in force at '
    'the hour decides (tap.so.mixed counts before h2 and sums from h2 on)');

select results_eq(
    $$select meter, hour, idempotency_key from claimed where n = 1 order by meter, hour$$,
    $$values ('tap.so.bytes'::text, '2024-03-10 10:00+00'::timestamptz, pg_temp.k('tap.so.bytes', 1710064800, 1)),
             ('tap.so.calls', '2024-03-10 10:00+00', pg_temp.k('tap.so.calls', 1710064800, 1)),
             ('tap.so.mixed', (select h1 from fx), pg_temp.k('tap.so.mixed', extract(epoch from (select h1 from fx))::bigint, 1)),
             ('tap.so.mixed', (select h2 from fx), pg_temp.k('tap.so.mixed', extract(epoch from (select h2 from fx))::bigint, 1)),
             ('tap.so.peak',  '2024-03-10 10:00+00', pg_temp.k('tap.so.peak', 1710064800, 1)),
             ('tap.so.peak',  '2024-03-10 11:00+00', pg_temp.k('tap.so.peak', 1710068400, 1)),
             ('tap.so.users', '2024-03-10 10:00+00', pg_temp.k('tap.so.users', 1710064800, 1))$$,
    'Idempotency-Key meter-<customer_id>-<meter_id>-<hour epoch>-r<revision> (UTC epoch, '
    'whatever the session''s time zone)');

select is((select pg_catalog.count(distinct claim_token) from claimed where n = 1 and claim_token is not null), 7::bigint,
          'each claimed hour has its own claim token');

select is_empty(
    $$select 1 from claimed k join ob o using (customer, meter, hour)
      where k.n = 1 and (o.state <> 'in_flight' or o.claimed_by <> 'w1' or o.claim_token <> k.claim_token
                         or o.claimed_at <> pg_catalog.now() or o.sending_revision <> k.revision
                         or o.sending_quantity <> k.quantity or o.sending_key <> k.idempotency_key
                         or o.attempts <> 1)$$,
    'the claimed hours are in_flight for w1 with their token, and hold the request being sent (sending_*)');

select is(pg_temp.claim(2, 'w2'), 0::bigint,
          'another worker''s claim right after gets nothing: in-flight hours are never handed out twice');
select results_eq($$select state, attempts, claim_token from ob_all where customer = 'tap-so-b'$$,
                  $$values ('pending'::text, 0, null::bigint)$$,
                  'tap-so-b''s unlinked hour stays pending, untouched');

-- ---------------------------------------------------------------------------------------------
-- A newer revision arrives while the hour is in flight (transaction 200, after run 1).
-- ---------------------------------------------------------------------------------------------
update meter.rollup_watermark set position_xid = '200', position_id = 0;
select pg_temp.put('tap-so-a', 'tap.so.calls', 'c4', '2024-03-10 10:50+00', 5, '{}', '200');
select pg_temp.put('tap-so-a', 'tap.so.bytes', 'b3', '2024-03-10 10:55+00', 1, '{}', '200');
select results_eq($$select events_folded, hours_touched from meter.rollup_run()$$, $$values (2::bigint, 2::bigint)$$,
                  'setup: run 2 folds one more event into calls and bytes, hour 10');

select results_eq(
    $$select o.meter, o.revision, o.synced_revision, o.state, o.sending_revision, o.sending_quantity, o.sending_key,
             o.claim_token = k.claim_token
      from ob o join claimed k using (customer, meter, hour)
      where k.n = 1 and o.meter in ('tap.so.calls', 'tap.so.bytes') order by o.meter$$,
    $$values ('tap.so.bytes'::text, 2::bigint, 0::bigint, 'in_flight'::text, 1::bigint, 2.500000000001::numeric,
              pg_temp.k('tap.so.bytes', 1710064800, 1), true),
             ('tap.so.calls', 2, 0, 'in_flight', 1, 3, pg_temp.k('tap.so.calls', 1710064800, 1), true)$$,
    'the outbox takes the new revision 2, but an in-flight hour stays in_flight with its claim and its request');

select is(pg_temp.ok('tap.so.calls', '2024-03-10 10:00+00'), 'pending',
          'sync_succeeded of revision 1 answers pending: revision 2 arrived meanwhile');
select results_eq(
    $$select revision, synced_revision, synced_quantity, state, attempts, claim_token, claimed_by, sending_key,
             next_attempt_at <= pg_catalog.now(), unsynced_since is not null
      from ob where meter = 'tap.so.calls'$$,
    $$values (2::bigint, 1::bigint, 3::numeric, 'pending'::text, 0, null::bigint, null::text, null::text, true, true)$$,
    'synced_revision moves to 1 (3 events), the hour is pending and due at once, still unsynced');

select is(pg_temp.claim(3, 'w2'), 1::bigint, 'the next claim hands out that hour alone (the others are in flight)');
select results_eq(
    $$select meter, revision, quantity, idempotency_key, attempts from claimed where n = 3$$,
    $$values ('tap.so.calls'::text, 2::bigint, 4::numeric, pg_temp.k('tap.so.calls', 1710064800, 2), 1)$$,
    'now with revision 2: 4 events, key ...-r2');
create temp table calls_tok as select pg_temp.tok('tap.so.calls', '2024-03-10 10:00+00') as t;
select is(pg_temp.ok('tap.so.calls', '2024-03-10 10:00+00'), 'synced', 'sync_succeeded of the latest revision answers synced');
select results_eq(
    $$select revision, synced_revision, synced_quantity, synced_at, state, attempts, unsynced_since, claim_token, sending_key
      from ob where meter = 'tap.so.calls'$$,
    $$values (2::bigint, 2::bigint, 4::numeric, pg_catalog.now(), 'synced'::text, 0, null::timestamptz, null::bigint, null::text)$$,
    'a synced hour: synced_revision = revision, synced quantity 4, no longer unsynced, nothing in flight');

select is(meter.sync_succeeded((select cust_a from fx), (select m_calls from fx), '2024-03-10 10:00+00', (select t from calls_tok)),
          'stale', 'a repeated report with the spent token is stale');
select is(meter.sync_failed((select cust_a from fx), (select m_calls from fx), '2024-03-10 10:00+00', (select t from calls_tok), 'late'),
          'stale', 'so is a failure reported with it');
select results_eq($$select synced_revision, state, last_error from ob where meter = 'tap.so.calls'$$,
                  $$values (2::bigint, 'synced'::text, null::text)$$,
                  'and neither changed the hour');

-- ---------------------------------------------------------------------------------------------
-- A synced hour changes again (transaction 210): pending again.
-- ---------------------------------------------------------------------------------------------
update meter.rollup_watermark set position_xid = '210', position_id = 0;
select pg_temp.put('tap-so-a', 'tap.so.calls', 'c5', '2024-03-10 10:55+00', 5, '{}', '210');
select pg_temp.put('tap-so-a', 'tap.so.free', 'f2', '2024-03-10 10:55+00', 5, '{}', '210');
select results_eq($$select events_folded, hours_touched from meter.rollup_run()$$, $$values (2::bigint, 2::bigint)$$,
                  'setup: run 3 folds one more calls event and one of the unpriced meter');
select results_eq(
    $$select revision, synced_revision, state, attempts, next_attempt_at <= pg_catalog.now(), unsynced_since
      from ob where meter = 'tap.so.calls'$$,
    $$values (3::bigint, 2::bigint, 'pending'::text, 0, true, pg_catalog.now())$$,
    'the synced hour is pending again at revision 3, due at once, unsynced since this run');
select is_empty($$select 1 from ob_all where meter = 'tap.so.free'$$, 'the unpriced meter''s hour is still not enqueued');

-- ---------------------------------------------------------------------------------------------
-- Lease expiry: w1 went silent on bytes hour 10 (revision 1 in flight, revision 2 arrived since).
-- ---------------------------------------------------------------------------------------------
update meter.sync_outbox set claimed_at = pg_catalog.now() - interval '61 seconds'
where customer_id = (select cust_a from fx) and meter_id = (select m_bytes from fx);
create temp table bytes_tok1 as select pg_temp.tok('tap.so.bytes', '2024-03-10 10:00+00') as t;

select is(pg_temp.claim(4, 'w3', 100, '2 minutes'), 1::bigint,
          'with a 2-minute lease, a claim 61 s old is not taken over (only the pending calls hour is handed out)');
select is((select meter from claimed where n = 4), 'tap.so.calls', 'that is the calls hour');
select is(pg_temp.claim(5, 'w3', 100, '60 seconds'), 1::bigint,
          'with a 60-second lease, the expired claim is handed out again');
select results_eq(
    $$select meter, revision, quantity, idempotency_key, attempts, claim_token <> (select t from bytes_tok1) from claimed where n = 5$$,
    $$values ('tap.so.bytes'::text, 1::bigint, 2.500000000001::numeric, pg_temp.k('tap.so.bytes', 1710064800, 1), 2, true)$$,
    're-claimed with the SAME request (revision 1, 2.500000000001, key ...-r1) although revision 2 exists, '
    'a new token, attempt 2');
select results_eq($$select state, claimed_by, revision from ob where meter = 'tap.so.bytes'$$,
                  $$values ('in_flight'::text, 'w3'::text, 2::bigint)$$, 'the hour is now w3''s');
select is(meter.sync_succeeded((select cust_a from fx), (select m_bytes from fx), '2024-03-10 10:00+00', (select t from bytes_tok1)),
          'stale', 'the silent worker''s late report is stale');
select results_eq($$select state, claimed_by, synced_revision from ob where meter = 'tap.so.bytes'$$,
                  $$values ('in_flight'::text, 'w3'::text, 0::bigint)$$, 'and changes nothing');
select is(pg_temp.ok('tap.so.bytes', '2024-03-10 10:00+00'), 'pending', 'w3''s report counts: pending (revision 2 waits)');
select is(pg_temp.claim(6, 'w3'), 1::bigint, 'the next claim hands it out again');
select results_eq(
    $$select meter, revision, quantity, idempotency_key, attempts from claimed where n = 6$$,
    $$values ('tap.so.bytes'::text, 2::bigint, 3.500000000001::numeric, pg_temp.k('tap.so.bytes', 1710064800, 2), 1)$$,
    'with revision 2 only now: 3.500000000001, key ...-r2, attempts counted afresh');
select is(pg_temp.ok('tap.so.bytes', '2024-03-10 10:00+00'), 'synced', 'bytes hour 10 synced');
select is(pg_temp.ok('tap.so.calls', '2024-03-10 10:00+00'), 'synced', 'calls hour 10 synced (revision 3)');
select is(pg_temp.ok('tap.so.peak', '2024-03-10 11:00+00'), 'synced', 'peak hour 11 synced (revision 1)');

-- ---------------------------------------------------------------------------------------------
-- Cancellations bump the revision (run 4): a synced hour goes pending, an in-flight one stays.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select status from meter.event_cancel('[{"customer": "tap-so-a", "idempotency_key": "p4"},
                                               {"customer": "tap-so-a", "idempotency_key": "u2"}]')$$,
    $$values ('cancelled'::text), ('cancelled')$$,
    'setup: peak p4 (hour 11''s only event) and users u2 (bob) are cancelled');
select results_eq($$select cancellations_folded, hours_touched from meter.rollup_run()$$, $$values (2::bigint, 2::bigint)$$,
                  'setup: run 4 subtracts both');
select results_eq(
    $$select meter, hour, revision, synced_revision, state, sending_revision from ob
      where meter in ('tap.so.peak', 'tap.so.users') order by meter, hour$$,
    $$values ('tap.so.peak'::text, '2024-03-10 10:00+00'::timestamptz, 1::bigint, 0::bigint, 'in_flight'::text, 1::bigint),
             ('tap.so.peak', '2024-03-10 11:00+00', 2, 1, 'pending', null),
             ('tap.so.users', '2024-03-10 10:00+00', 2, 0, 'in_flight', 1)$$,
    'a cancellation bumps the revision: the synced peak hour 11 is pending at revision 2, the in-flight '
    'users hour stays in_flight (sending revision 1) at revision 2');
select is(pg_temp.claim(7, 'w4'), 1::bigint, 'the next claim hands out peak hour 11');
select results_eq(
    $$select meter, hour, revision, quantity, idempotency_key from claimed where n = 7$$,
    $$values ('tap.so.peak'::text, '2024-03-10 11:00+00'::timestamptz, 2::bigint, 0::numeric, pg_temp.k('tap.so.peak', 1710068400, 2))$$,
    'a max hour whose every event was cancelled is sent as 0');
select is(pg_temp.ok('tap.so.peak', '2024-03-10 11:00+00'), 'synced', 'peak hour 11 synced at 0');

-- ---------------------------------------------------------------------------------------------
-- Failures: users hour 10 (in flight since claim 1: revision 1, 2 users; revision 2, 1 user, exists).
-- ---------------------------------------------------------------------------------------------
select is(pg_temp.fail('tap.so.users', '2024-03-10 10:00+00', 'timeout', false), 'pending',
          'an uncertain failure (timeout) after attempt 1: pending');
select results_eq(
    $$select state, attempts, last_error, claim_token, claimed_by, claimed_at, sending_revision, sending_quantity, sending_key
      from ob where meter = 'tap.so.users'$$,
    $$values ('pending'::text, 1, 'timeout'::text, null::bigint, null::text, null::timestamptz, 1::bigint, 2::numeric,
              pg_temp.k('tap.so.users', 1710064800, 1))$$,
    'the claim is released but the uncertain request (revision 1, 2, key ...-r1) is kept');
select ok((select next_attempt_at - pg_catalog.now() between interval '0.5 seconds' and interval '1 second'
           from ob where meter = 'tap.so.users'),
          'backoff after attempt 1 with base 1 s: within [0.5 s, 1 s]');
select is(pg_temp.claim(8, 'w4'), 0::bigint, 'the hour is not handed out before its backoff has elapsed');

update meter.sync_outbox set next_attempt_at = pg_catalog.now() where meter_id = (select m_users from fx);
select is(pg_temp.claim(9, 'w4'), 1::bigint, 'once it has, the next claim hands it out');
select results_eq(
    $$select revision, quantity, idempotency_key, attempts from claimed where n = 9$$,
    $$values (1::bigint, 2::numeric, pg_temp.k('tap.so.users', 1710064800, 1), 2)$$,
    'repeating exactly the uncertain request (revision 1, 2 users, key ...-r1), not revision 2: attempt 2');

select is(pg_temp.fail('tap.so.users', '2024-03-10 10:00+00', '400 invalid request', true), 'pending',
          'a definitive failure (the engine did not apply it) after attempt 2: pending');
select results_eq($$select attempts, last_error, sending_revision, sending_quantity, sending_key from ob where meter = 'tap.so.users'$$,
                  $$values (2, '400 invalid request'::text, null::bigint, null::numeric, null::text)$$,
                  'the request is forgotten (sending_* cleared)');
select ok((select next_attempt_at - pg_catalog.now() between interval '1 second' and interval '2 seconds'
           from ob where meter = 'tap.so.users'),
          'backoff after attempt 2 with base 1 s: within [1 s, 2 s]');

update meter.sync_outbox set next_attempt_at = pg_catalog.now() where meter_id = (select m_users from fx);
select is(pg_temp.claim(10, 'w4'), 1::bigint, 'the next claim hands it out');
select results_eq(
    $$select revision, quantity, idempotency_key, attempts from claimed where n = 10$$,
    $$values (2::bigint, 1::numeric, pg_temp.k('tap.so.users', 1710064800, 2), 3)$$,
    'with the current revision: 2, 1 user (bob cancelled), key ...-r2, attempt 3');

select is(pg_temp.fail('tap.so.users', '2024-03-10 10:00+00', '503', false, 10, '1 minute', '90 seconds'), 'pending',
          'an uncertain failure after attempt 3');
select ok((select next_attempt_at - pg_catalog.now() between interval '45 seconds' and interval '90 seconds'
           from ob where meter = 'tap.so.users'),
          'backoff after attempt 3 with base 1 min is capped: min(90 s, 4 min), within [45 s, 90 s]');

update meter.sync_outbox set next_attempt_at = pg_catalog.now() where meter_id = (select m_users from fx);
select is(pg_temp.claim(11, 'w4'), 1::bigint, 'claimed again (attempt 4)');
select is(pg_temp.fail('tap.so.users', '2024-03-10 10:00+00', '503', false, 5), 'pending',
          'with max_attempts 5, a failure of attempt 4 leaves the hour pending');
update meter.sync_outbox set next_attempt_at = pg_catalog.now() where meter_id = (select m_users from fx);
select is(pg_temp.claim(12, 'w4'), 1::bigint, 'claimed again (attempt 5)');
select is((select idempotency_key from claimed where n = 12), pg_temp.k('tap.so.users', 1710064800, 2),
          'still the same request (key ...-r2)');
select is(pg_temp.fail('tap.so.users', '2024-03-10 10:00+00', '503 again', false, 5), 'pending',
          'an unknown outcome never kills an hour by count (an outage drains on recovery)');
-- Unsynced for longer than give_up_after (24 h): the next uncertain failure parks it.
update meter.sync_outbox set next_attempt_at = pg_catalog.now(), unsynced_since = pg_catalog.now() - interval '25 hours'
where meter_id = (select m_users from fx);
select is(pg_temp.claim(121, 'w4'), 1::bigint, 'claimed again (attempt 6)');
select is(pg_temp.fail('tap.so.users', '2024-03-10 10:00+00', '503 again', false, 5), 'dead',
          'unsynced for more than 24 h: an uncertain failure parks the hour');
select results_eq(
    $$select state, attempts, last_error, claim_token, sending_key from ob where meter = 'tap.so.users'$$,
    $$values ('dead'::text, 6, '503 again'::text, null::bigint, pg_temp.k('tap.so.users', 1710064800, 2))$$,
    'dead, 6 attempts, the last error kept, the uncertain request kept');
-- A late event of the parked hour: its revision moves on, but an hour parked by the give-up timer
-- keeps its uncertain request and stays dead: repeating that request after the engine's
-- idempotency key expired is an operator's decision (sync_retry), not a rollup's side effect.
update meter.rollup_watermark set position_xid = '220', position_id = 0;
select pg_temp.put('tap-so-a', 'tap.so.users', 'u-late', '2024-03-10 10:30+00', 1, '{"user": "cid"}', '220');
select results_eq($$select events_folded, hours_touched from meter.rollup_run()$$, $$values (1::bigint, 1::bigint)$$,
                  'a late event of the parked hour is folded');
select results_eq(
    $$select state, revision, attempts, sending_key from ob where meter = 'tap.so.users'$$,
    $$values ('dead'::text, 3::bigint, 6, pg_temp.k('tap.so.users', 1710064800, 2))$$,
    'the hour stays dead at its new revision 3, its attempts and uncertain request kept');

-- A second dead hour: mixed h1 (in flight since claim 1) fails definitively with max_attempts 1.
select is(pg_temp.fail('tap.so.mixed', (select h1 from fx), '400 no such item', true, 1), 'dead',
          'max_attempts 1: the first failure kills the hour');
update meter.sync_outbox set next_attempt_at = pg_catalog.now() - interval '1 hour' where state = 'dead';
select is(pg_temp.claim(13, 'w4'), 0::bigint, 'dead hours are never handed out, however long ago they were due');

-- ---------------------------------------------------------------------------------------------
-- sync_retry.
-- ---------------------------------------------------------------------------------------------
select throws_ok($$select meter.sync_retry('tap-so-nobody')$$, '22023', 'unknown customer tap-so-nobody',
                 'sync_retry refuses an unknown customer (22023)');
select throws_ok($$select meter.sync_retry(null, 'tap.so.nope')$$, '22023', 'unknown meter tap.so.nope',
                 'sync_retry refuses an unknown meter (22023)');
select is(meter.sync_retry('tap-so-b'), 0::bigint, 'a customer without dead hours: none re-driven');
select is(meter.sync_retry('tap-so-a', 'tap.so.users'), 1::bigint, 'customer and meter filter: the users hour alone');
select results_eq(
    $$select meter, state, attempts, next_attempt_at = pg_catalog.now(), sending_key from ob
      where meter in ('tap.so.users', 'tap.so.mixed') and hour in ('2024-03-10 10:00+00', (select h1 from fx))
      order by meter$$,
    $$values ('tap.so.mixed'::text, 'dead'::text, 1, false, null::text),
             ('tap.so.users', 'pending', 0, true, pg_temp.k('tap.so.users', 1710064800, 2))$$,
    're-driven: pending, attempts from 0, due now, the uncertain request kept; the other dead hour untouched');
select is(meter.sync_retry(), 1::bigint, 'no filter: the remaining dead hour');
select is(meter.sync_retry(), 0::bigint, 'and then none');

select is(pg_temp.claim(14, 'w5', 1), 1::bigint, 'limit 1: one hour handed out');
select is(pg_temp.claim(15, 'w5', 1), 1::bigint, 'limit 1 again: the other');
select results_eq(
    $$select meter, hour, revision, quantity, idempotency_key, attempts from claimed where n in (14, 15) order by meter$$,
    $$values ('tap.so.mixed'::text, (select h1 from fx), 1::bigint, 2::numeric,
              pg_temp.k('tap.so.mixed', extract(epoch from (select h1 from fx))::bigint, 1), 1),
             ('tap.so.users', '2024-03-10 10:00+00', 2, 1, pg_temp.k('tap.so.users', 1710064800, 2), 1)$$,
    'the re-driven hours: users repeats its uncertain request first; mixed h1 sends its revision anew');

select * from finish();
rollback;
