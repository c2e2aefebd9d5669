-- meter.event_ingest(..., p_api_token): authentication and ingest in one call, as the HTTP
-- service makes it. A refused key raises 28000 and stores nothing; a live key ingests exactly as
-- without a token; the ingest role may call it.
begin;
select plan(7);
\ir support/fixtures.sql

select meter.customer_upsert('wk-cust');
select meter.meter_upsert('wk.calls', 'count');
select pg_temp.key_create('wk', 'mk_withkey_live_token_000000000000000000000');
select pg_temp.key_create('wk-revoked', 'mk_withkey_revoked_token_00000000000000000');
select meter.api_key_revoke('mk_withkey_r');

create temp table wk_batch as
select pg_catalog.jsonb_build_array(
           pg_catalog.jsonb_build_object('customer', 'wk-cust', 'meter', 'wk.calls', 'idempotency_key', 'wk-1',
                                         'occurred_at', pg_catalog.now() - interval '1 minute', 'value', '1')) as b;

select throws_ok(
    $$select * from meter.event_ingest((select b from wk_batch), p_api_key_hash => pg_temp.key_hash('mk_not_a_key'))$$,
    '28000', 'unknown or revoked API key', 'an unknown token raises 28000');
select throws_ok(
    $$select * from meter.event_ingest((select b from wk_batch), p_api_key_hash => pg_temp.key_hash('mk_withkey_revoked_token_00000000000000000'))$$,
    '28000', 'unknown or revoked API key', 'a revoked token raises 28000');
select is((select pg_catalog.count(*) from meter.events where idempotency_key = 'wk-1'), 0::bigint,
          'nothing stored for refused keys');

select results_eq(
    $$select status from meter.event_ingest((select b from wk_batch), p_api_key_hash => pg_temp.key_hash('mk_withkey_live_token_000000000000000000000'))$$,
    $$values ('accepted'::text)$$, 'a live token ingests: accepted');
select results_eq(
    $$select status from meter.event_ingest((select b from wk_batch), p_api_key_hash => pg_temp.key_hash('mk_withkey_live_token_000000000000000000000'))$$,
    $$values ('duplicate'::text)$$, 'and a second delivery is a duplicate');

select ok(pg_catalog.has_function_privilege('meter_ingest',
          'meter.event_ingest(jsonb, interval, interval, bytea)', 'EXECUTE'),
          'meter_ingest may execute event_ingest');
select ok(not pg_catalog.has_function_privilege('meter_analyst',
          'meter.event_ingest(jsonb, interval, interval, bytea)', 'EXECUTE'),
          'meter_analyst may not');

select * from finish();
rollback;
