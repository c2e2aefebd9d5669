-- API key scopes (0008_api_key_scopes): a key may ingest, cancel and read (GET /v1/usage) only as
-- its scopes say, and only for its customers when it has a list. A key without the scope gets
-- 42501 before anything is stored; an event or cancellation for a customer outside the list is
-- rejected alone (customer_not_allowed), the others of the batch go through; meter.api_key_authorize
-- answers the same for GET /v1/usage. Keys made before 0008 (or without options) may do all.
begin;
select plan(17);
\ir support/fixtures.sql

select meter.customer_upsert('tap-sc-a'), meter.customer_upsert('tap-sc-b'), meter.meter_upsert('tap.sc.calls', 'count');
select pg_temp.key_create('tap-sc-all', 'mk_ScopeAllKey0123456789ABCDEFGHIJKLMNOPQRS');
select meter.api_key_create('tap-sc-read', 'mk_ScopeRead', pg_temp.key_hash('mk_ScopeReadKey0123456789ABCDEFGHIJKLMNOPQR'),
                            array['read']);
select meter.api_key_create('tap-sc-a-only', 'mk_ScopeAOnl', pg_temp.key_hash('mk_ScopeAOnlyKey0123456789ABCDEFGHIJKLMNOPQ'),
                            array['ingest', 'cancel', 'read'], array['tap-sc-a']);
create function pg_temp.ev(p_customer text, p_key text) returns jsonb language sql
as $$ select pg_catalog.jsonb_build_object('customer', p_customer, 'meter', 'tap.sc.calls', 'idempotency_key', p_key,
                                           'occurred_at', pg_catalog.now() - interval '1 minute') $$;

select is((select scopes from meter.api_keys where name = 'tap-sc-all'), array['cancel', 'ingest', 'read'],
          'a key made without options may do everything');
select is((select customer_ids from meter.api_keys where name = 'tap-sc-all'), null::bigint[], '... for every customer');

-- Scope.
select throws_ok(
    $$select * from meter.event_ingest(pg_catalog.jsonb_build_array(pg_temp.ev('tap-sc-a', 'r1')),
                                       p_api_key_hash => pg_temp.key_hash('mk_ScopeReadKey0123456789ABCDEFGHIJKLMNOPQR'))$$,
    '42501', null, 'a read-only key may not ingest (42501)');
select is_empty($$select 1 from meter.events where idempotency_key = 'r1'$$, 'and nothing is stored');
select throws_ok(
    $$select * from meter.event_cancel('[{"customer": "tap-sc-a", "idempotency_key": "x"}]',
                                       pg_temp.key_hash('mk_ScopeReadKey0123456789ABCDEFGHIJKLMNOPQR'))$$,
    '42501', null, 'a read-only key may not cancel (42501)');
select is(meter.api_key_authorize(pg_temp.key_hash('mk_ScopeReadKey0123456789ABCDEFGHIJKLMNOPQR'), 'read', 'tap-sc-b'), 'ok',
          'a read-only key may read any customer''s usage');
select is(meter.api_key_authorize(pg_temp.key_hash('mk_ScopeReadKey0123456789ABCDEFGHIJKLMNOPQR'), 'ingest', null),
          'insufficient_scope', 'api_key_authorize: insufficient_scope');
select is(meter.api_key_authorize(pg_temp.key_hash('mk_NoSuchKey'), 'read', 'tap-sc-a'), 'unauthorized',
          'api_key_authorize: an unknown key is unauthorized');

-- Customers.
select results_eq(
    $$select ord, status, code, field from meter.event_ingest(
        pg_catalog.jsonb_build_array(pg_temp.ev('tap-sc-a', 'c1'), pg_temp.ev('tap-sc-b', 'c2')),
        p_api_key_hash => pg_temp.key_hash('mk_ScopeAOnlyKey0123456789ABCDEFGHIJKLMNOPQ'))$$,
    $$values (0, 'accepted'::text, null::text, null::text), (1, 'rejected', 'customer_not_allowed', 'customer')$$,
    'a key for tap-sc-a: its event is stored, tap-sc-b''s is rejected alone');
select results_eq(
    $$select status, code from meter.event_ingest(pg_catalog.jsonb_build_array(pg_temp.ev('tap-sc-b', 'c3')),
        p_api_key_hash => pg_temp.key_hash('mk_ScopeAOnlyKey0123456789ABCDEFGHIJKLMNOPQ'))$$,
    $$values ('rejected'::text, 'customer_not_allowed'::text)$$,
    'a single event for another customer is rejected (the one-event fast path checks the list too)');
select is_empty($$select 1 from meter.events where idempotency_key in ('c2', 'c3')$$, 'neither is stored');
select results_eq(
    $$select status from meter.event_ingest(pg_catalog.jsonb_build_array(pg_temp.ev('tap-sc-b', 'c4')),
        p_api_key_hash => pg_temp.key_hash('mk_ScopeAllKey0123456789ABCDEFGHIJKLMNOPQRS'))$$,
    $$values ('accepted'::text)$$, 'an unrestricted key stores it');
select results_eq(
    $$select ord, status, code from meter.event_cancel(
        '[{"customer": "tap-sc-b", "idempotency_key": "c4"}, {"customer": "tap-sc-a", "idempotency_key": "c1"}]',
        pg_temp.key_hash('mk_ScopeAOnlyKey0123456789ABCDEFGHIJKLMNOPQ'))$$,
    $$values (0, 'rejected'::text, 'customer_not_allowed'::text), (1, 'cancelled', null)$$,
    'a key for tap-sc-a cannot cancel tap-sc-b''s event, and cancels its own');
select is_empty($$select 1 from meter.event_cancellations x join meter.events e on e.id = x.event_id where e.idempotency_key = 'c4'$$,
                'tap-sc-b''s event is not cancelled');
select is(meter.api_key_authorize(pg_temp.key_hash('mk_ScopeAOnlyKey0123456789ABCDEFGHIJKLMNOPQ'), 'read', 'tap-sc-b'),
          'customer_not_allowed', 'api_key_authorize: another customer''s usage is customer_not_allowed');

-- Creation.
select throws_ok($$select meter.api_key_create('bad', 'mk_x', pg_temp.key_hash('mk_x1'), array['write'])$$,
                 '22023', null, 'an unknown scope is refused (22023)');
select throws_ok($$select meter.api_key_create('bad', 'mk_x', pg_temp.key_hash('mk_x2'), array['read'], array['nobody'])$$,
                 '22023', null, 'an unknown customer is refused (22023)');

select * from finish();
rollback;
