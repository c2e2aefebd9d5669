-- meter.event_cancel(): one verdict per input element, by position (cancelled, already_cancelled,
-- rejected with unknown_customer or event_not_found), exactly one cancellation per event, the
-- event row itself never touched, so that a cancelled key can never be used again (a different
-- event under it is a conflict, the same one a duplicate, and it stays cancelled); the API token
-- check (28000) and the argument check (22023).
-- The rollup's side of cancellations is in rollup_cancellations.test.sql.
begin;
select plan(25);
\ir support/fixtures.sql

create temp table fx as
select meter.customer_upsert('tap-ce-alpha') as cust_a,
       meter.customer_upsert('tap-ce-beta')  as cust_b,
       meter.meter_upsert('tap.ce.bytes', 'sum') as m_bytes;

select pg_temp.key_create('tap-ce-live', 'mk_CancelLiveKey0123456789ABCDEFGHIJKLMNOP');
select pg_temp.key_create('tap-ce-dead', 'mk_CancelDeadKey0123456789ABCDEFGHIJKLMNOP');
select meter.api_key_revoke('mk_CancelDea');

create temp table batch (name text primary key, b jsonb not null);
insert into batch values ('events', pg_catalog.jsonb_build_array(
    pg_catalog.jsonb_build_object('customer', 'tap-ce-alpha', 'meter', 'tap.ce.bytes', 'idempotency_key', 'k1',
                                  'occurred_at', pg_catalog.now() - interval '1 hour', 'value', '10'),
    pg_catalog.jsonb_build_object('customer', 'tap-ce-alpha', 'meter', 'tap.ce.bytes', 'idempotency_key', 'k2',
                                  'occurred_at', pg_catalog.now() - interval '1 hour', 'value', '20'),
    pg_catalog.jsonb_build_object('customer', 'tap-ce-alpha', 'meter', 'tap.ce.bytes', 'idempotency_key', 'k3',
                                  'occurred_at', pg_catalog.now() - interval '1 hour', 'value', '30'),
    pg_catalog.jsonb_build_object('customer', 'tap-ce-beta', 'meter', 'tap.ce.bytes', 'idempotency_key', 'k1',
                                  'occurred_at', pg_catalog.now() - interval '1 hour', 'value', '40')));

create temp table stored as select * from meter.event_ingest((select b from batch where name = 'events'));
create temp table ev as
select c.external_id as customer, e.idempotency_key as key, e.id
from meter.events e join meter.customers c on c.id = e.customer_id
where c.external_id like 'tap-ce-%';
create temp table events_before as select * from meter.events where id in (select id from ev);

select results_eq($$select status from stored order by ord$$,
                  $$values ('accepted'::text), ('accepted'), ('accepted'), ('accepted')$$,
                  'setup: four events stored (alpha k1, k2, k3; beta k1)');

-- ---------------------------------------------------------------------------------------------
-- Verdicts.
-- ---------------------------------------------------------------------------------------------
insert into batch values ('first', $$[
  {"customer": "tap-ce-alpha",  "idempotency_key": "k1", "reason": "refunded"},
  {"customer": "tap-ce-alpha",  "idempotency_key": "k2"},
  {"customer": "tap-ce-alpha",  "idempotency_key": "k1", "reason": "again, in the same request"},
  {"customer": "tap-ce-alpha",  "idempotency_key": "nope"},
  {"customer": "tap-ce-nobody", "idempotency_key": "k1"},
  {"customer": "tap-ce-beta",   "idempotency_key": "k2"}
]$$);

create temp table run1 as select * from meter.event_cancel((select b from batch where name = 'first'));

select results_eq(
    $$select ord, status, event_id, code, field, reason from run1$$,
    $$values (0, 'cancelled'::text, (select id from ev where customer = 'tap-ce-alpha' and key = 'k1'), null::text, null::text, null::text),
             (1, 'cancelled', (select id from ev where customer = 'tap-ce-alpha' and key = 'k2'), null, null, null),
             (2, 'already_cancelled', (select id from ev where customer = 'tap-ce-alpha' and key = 'k1'), null, null, null),
             (3, 'rejected', null, 'event_not_found', 'idempotency_key',
              'no stored event of customer ''tap-ce-alpha'' has idempotency key ''nope'''),
             (4, 'rejected', null, 'unknown_customer', 'customer', 'no customer with external id ''tap-ce-nobody'''),
             (5, 'rejected', null, 'event_not_found', 'idempotency_key',
              'no stored event of customer ''tap-ce-beta'' has idempotency key ''k2''')$$,
    'verdicts in input order: cancelled with the event id; a key repeated in the request is '
    'already_cancelled; unknown key and unknown customer rejected with code, field and reason; '
    'keys are per customer');

select results_eq(
    $$select e.customer, e.key, c.reason, c.cancelled_at, c.rolled_up_at
      from meter.event_cancellations c join ev e on e.id = c.event_id order by e.customer, e.key$$,
    $$values ('tap-ce-alpha'::text, 'k1'::text, 'refunded'::text, pg_catalog.now(), null::timestamptz),
             ('tap-ce-alpha', 'k2', null, pg_catalog.now(), null)$$,
    'one cancellation row per cancelled event, with the first occurrence''s reason, not rolled up yet');

select is_empty(
    $$select 1 from meter.event_cancellations c join ev e on e.id = c.event_id
      where e.customer = 'tap-ce-beta'$$,
    'beta''s k1 is not cancelled by alpha''s k1');

create temp table run2 as select * from meter.event_cancel((select b from batch where name = 'first'));

select results_eq(
    $$select ord, status, event_id, code from run2$$,
    $$select ord, case when status = 'cancelled' then 'already_cancelled' else status end, event_id, code from run1$$,
    'the same request again: already_cancelled where it was cancelled, the same rejections');

select results_eq(
    $$select e.key, c.reason, c.cancelled_at from meter.event_cancellations c join ev e on e.id = c.event_id
      where e.customer = 'tap-ce-alpha' order by e.key$$,
    $$values ('k1'::text, 'refunded'::text, pg_catalog.now()), ('k2', null, pg_catalog.now())$$,
    'and it changes nothing: still one row each, first reason kept');

select results_eq(
    $$select * from meter.events where id in (select id from ev) order by id$$,
    $$select * from events_before order by id$$,
    'cancelling never changes the event rows');

select is_empty($$select * from meter.event_cancel('[]')$$, 'an empty array yields no verdicts');

select results_eq(
    $$select ord, status, code, field from meter.event_cancel('[{"idempotency_key": "k3"}, {"customer": "tap-ce-alpha"}]')$$,
    $$values (0, 'rejected'::text, 'unknown_customer'::text, 'customer'::text),
             (1, 'rejected', 'event_not_found', 'idempotency_key')$$,
    'a missing customer or key is rejected like an unknown one');

select throws_ok(
    $$select * from meter.event_cancel(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
          'customer', 'tap-ce-alpha', 'idempotency_key', 'k3', 'reason', pg_catalog.repeat('x', 1001))))$$,
    '23514', 'new row for relation "event_cancellations" violates check constraint "event_cancellations_reason_length"',
    'a reason over 1000 characters is refused (23514)');

-- ---------------------------------------------------------------------------------------------
-- A cancelled key stays taken.
-- ---------------------------------------------------------------------------------------------
insert into batch values ('reuse', pg_catalog.jsonb_build_array(
    pg_catalog.jsonb_build_object('customer', 'tap-ce-alpha', 'meter', 'tap.ce.bytes', 'idempotency_key', 'k1',
                                  'occurred_at', pg_catalog.now() - interval '1 hour', 'value', '99'),
    pg_catalog.jsonb_build_object('customer', 'tap-ce-alpha', 'meter', 'tap.ce.bytes', 'idempotency_key', 'k2',
                                  'occurred_at', pg_catalog.now() - interval '1 hour', 'value', '20')));

select results_eq(
    $$select ord, status, event_id, code from meter.event_ingest((select b from batch where name = 'reuse'))$$,
    $$values (0, 'conflict'::text, (select id from ev where customer = 'tap-ce-alpha' and key = 'k1'), 'idempotency_key_conflict'::text),
             (1, 'duplicate', (select id from ev where customer = 'tap-ce-alpha' and key = 'k2'), null)$$,
    'a cancelled key cannot be reused: a different event under it is a conflict, a resend of the '
    'cancelled event a duplicate, both against the cancelled event');

select results_eq(
    $$select pg_catalog.count(*), pg_catalog.min(e.value) from meter.events e
      where e.customer_id = (select cust_a from fx) and e.idempotency_key = 'k1'$$,
    $$values (1::bigint, 10::numeric)$$,
    'no second event was stored under the cancelled key');

select results_eq(
    $$select ord, status from meter.event_cancel('[{"customer": "tap-ce-alpha", "idempotency_key": "k1"},
                                                  {"customer": "tap-ce-alpha", "idempotency_key": "k2"}]')$$,
    $$values (0, 'already_cancelled'::text), (1, 'already_cancelled')$$,
    'and the events stay cancelled');

-- ---------------------------------------------------------------------------------------------
-- API token.
-- ---------------------------------------------------------------------------------------------
select throws_ok(
    $$select * from meter.event_cancel('[{"customer": "tap-ce-alpha", "idempotency_key": "k3"}]', pg_temp.key_hash('mk_not_a_key'))$$,
    '28000', 'unknown or revoked API key', 'an unknown token raises 28000');
select throws_ok(
    $$select * from meter.event_cancel('[{"customer": "tap-ce-alpha", "idempotency_key": "k3"}]',
                                        pg_temp.key_hash('mk_CancelDeadKey0123456789ABCDEFGHIJKLMNOP'))$$,
    '28000', 'unknown or revoked API key', 'a revoked token raises 28000');
select throws_ok(
    $$select * from meter.event_cancel('[{"customer": "tap-ce-alpha", "idempotency_key": "k3"}]', '')$$,
    '28000', 'unknown or revoked API key', 'an empty token raises 28000');
select is_empty(
    $$select 1 from meter.event_cancellations where event_id = (select id from ev where customer = 'tap-ce-alpha' and key = 'k3')$$,
    'a refused token cancels nothing');
select results_eq(
    $$select ord, status, event_id from meter.event_cancel('[{"customer": "tap-ce-alpha", "idempotency_key": "k3"}]',
                                                             pg_temp.key_hash('mk_CancelLiveKey0123456789ABCDEFGHIJKLMNOP'))$$,
    $$values (0, 'cancelled'::text, (select id from ev where customer = 'tap-ce-alpha' and key = 'k3'))$$,
    'a live token cancels');
select results_eq(
    $$select ord, status from meter.event_cancel('[{"customer": "tap-ce-beta", "idempotency_key": "k1"}]', null)$$,
    $$values (0, 'cancelled'::text)$$,
    'no token (operators in psql): no check');

-- ---------------------------------------------------------------------------------------------
-- Argument shape.
-- ---------------------------------------------------------------------------------------------
select throws_ok($$select * from meter.event_cancel('{"customer": "tap-ce-alpha", "idempotency_key": "k1"}')$$,
                 '22023', 'meter.event_cancel: p_cancellations must be a JSON array',
                 'a JSON object instead of an array raises 22023');
select throws_ok($$select * from meter.event_cancel(null)$$,
                 '22023', 'meter.event_cancel: p_cancellations must be a JSON array', 'NULL raises 22023');
select throws_ok($$select * from meter.event_cancel('"[]"')$$,
                 '22023', 'meter.event_cancel: p_cancellations must be a JSON array', 'a JSON string raises 22023');
select throws_ok($$select * from meter.event_cancel('[]', pg_temp.key_hash('mk_not_a_key'))$$,
                 '28000', 'unknown or revoked API key', 'the token is checked even for an empty request');

-- ---------------------------------------------------------------------------------------------
-- Function properties.
-- ---------------------------------------------------------------------------------------------
select volatility_is('meter', 'event_cancel', array['jsonb', 'bytea']::name[], 'volatile',
                     'event_cancel is VOLATILE');
select is_definer('meter', 'event_cancel', array['jsonb', 'bytea']::name[],
                  'event_cancel is SECURITY DEFINER (meter_ingest reads and writes no table itself)');

select * from finish();
rollback;
