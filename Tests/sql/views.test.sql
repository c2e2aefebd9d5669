-- Reporting views: meter.event_daily (stored events and redeliveries per customer, meter and UTC
-- day of occurred_at) and meter.api_keys_public (keys without their hashes).
begin;
select plan(11);
\ir support/fixtures.sql

create temp table fx as
select meter.customer_upsert('tap-vw-cust', 'TAP views', 'Pacific/Auckland') as cust,
       meter.customer_upsert('tap-vw-idle')                                  as idle,
       meter.meter_upsert('tap.vw.bytes', 'sum')                             as m_bytes,
       meter.meter_upsert('tap.vw.calls')                                    as m_calls;

create temp table batch (name text primary key, b jsonb not null);
insert into batch values
('stored', $$[
  {"customer": "tap-vw-cust", "meter": "tap.vw.bytes", "idempotency_key": "tap-vw-b1", "occurred_at": "2024-03-10T00:00:00Z",           "value": "10"},
  {"customer": "tap-vw-cust", "meter": "tap.vw.bytes", "idempotency_key": "tap-vw-b2", "occurred_at": "2024-03-10T23:59:59.999999Z",    "value": "2.5"},
  {"customer": "tap-vw-cust", "meter": "tap.vw.bytes", "idempotency_key": "tap-vw-b3", "occurred_at": "2024-03-10T23:30:00-02:00",      "value": "7"},
  {"customer": "tap-vw-cust", "meter": "tap.vw.bytes", "idempotency_key": "tap-vw-b4", "occurred_at": "2024-03-11T12:00:00Z",           "value": "0.000000000001"},
  {"customer": "tap-vw-cust", "meter": "tap.vw.calls", "idempotency_key": "tap-vw-c1", "occurred_at": "2024-03-10T12:00:00+14:00"},
  {"customer": "tap-vw-cust", "meter": "tap.vw.calls", "idempotency_key": "tap-vw-c2", "occurred_at": "2024-03-10T05:00:00Z"}
]$$),
('resend1', $$[
  {"customer": "tap-vw-cust", "meter": "tap.vw.bytes", "idempotency_key": "tap-vw-b1", "occurred_at": "2024-03-10T00:00:00Z", "value": "10.0"},
  {"customer": "tap-vw-cust", "meter": "tap.vw.bytes", "idempotency_key": "tap-vw-b2", "occurred_at": "2024-03-10T23:59:59.999999Z", "value": "3"},
  {"customer": "tap-vw-cust", "meter": "tap.vw.calls", "idempotency_key": "tap-vw-c1", "occurred_at": "2024-03-09T22:00:00Z"},
  {"customer": "tap-vw-cust", "meter": "tap.vw.calls", "idempotency_key": "tap-vw-b4", "occurred_at": "2024-03-11T12:00:00Z", "value": "0.000000000001"}
]$$),
('resend2', $$[
  {"customer": "tap-vw-cust", "meter": "tap.vw.bytes",   "idempotency_key": "tap-vw-b1", "occurred_at": "2024-03-10T00:00:00Z", "value": "10"},
  {"customer": "tap-vw-cust", "meter": "tap.vw.nometer", "idempotency_key": "tap-vw-b9", "occurred_at": "2024-03-10T00:00:00Z"},
  {"customer": "tap-vw-cust", "meter": "tap.vw.bytes",   "idempotency_key": "tap-vw-b8", "occurred_at": "2000-01-01T00:00:00Z"}
]$$);

-- A window wide enough for fixed 2024 dates, narrow enough to reject the year-2000 element.
create temp table runs as
select 'stored' as name, v.* from meter.event_ingest((select b from batch where name = 'stored'), interval '5 minutes', interval '20 years') v;
insert into runs
select 'resend1', v.* from meter.event_ingest((select b from batch where name = 'resend1'), interval '5 minutes', interval '20 years') v;
insert into runs
select 'resend2', v.* from meter.event_ingest((select b from batch where name = 'resend2'), interval '5 minutes', interval '20 years') v;

select results_eq(
    $$select name, ord, status from runs order by name, ord$$,
    $$values ('resend1'::text, 0, 'duplicate'::text), ('resend1', 1, 'conflict'), ('resend1', 2, 'duplicate'), ('resend1', 3, 'conflict'),
             ('resend2', 0, 'duplicate'), ('resend2', 1, 'rejected'), ('resend2', 2, 'rejected'),
             ('stored', 0, 'accepted'), ('stored', 1, 'accepted'), ('stored', 2, 'accepted'),
             ('stored', 3, 'accepted'), ('stored', 4, 'accepted'), ('stored', 5, 'accepted')$$,
    'setup: the verdicts the view is expected to summarise');

-- ---------------------------------------------------------------------------------------------
-- meter.event_daily
-- ---------------------------------------------------------------------------------------------
select columns_are('meter', 'event_daily',
                   array['customer', 'meter', 'day', 'events', 'total_value', 'duplicates', 'conflicts']::name[],
                   'event_daily has exactly its documented columns');

select results_eq(
    $$select customer, meter, day, events, total_value, duplicates, conflicts
      from meter.event_daily where customer = 'tap-vw-cust' order by meter, day$$,
    $$values ('tap-vw-cust'::text, 'tap.vw.bytes'::text, date '2024-03-10', 2::bigint, 12.5::numeric,            2::bigint, 1::bigint),
             ('tap-vw-cust',       'tap.vw.bytes',       date '2024-03-11', 2,         7.000000000001,            0,         1),
             ('tap-vw-cust',       'tap.vw.calls',       date '2024-03-09', 1,         1,                         1,         0),
             ('tap-vw-cust',       'tap.vw.calls',       date '2024-03-10', 1,         1,                         0,         0)$$,
    'exact events, total_value, duplicates and conflicts per UTC day (not the billing timezone), '
    'redeliveries counted against the stored event''s meter and day');

select is((select total_value::text from meter.event_daily
           where customer = 'tap-vw-cust' and meter = 'tap.vw.bytes' and day = date '2024-03-11'),
          '7.000000000001', 'total_value is exact numeric, no float rounding');

select is_empty($$select * from meter.event_daily where customer = 'tap-vw-idle'$$,
                'a customer without events has no rows');

select is((select pg_catalog.sum(events) from meter.event_daily where customer = 'tap-vw-cust'),
          (select pg_catalog.count(*)::numeric from meter.events where customer_id = (select cust from fx)),
          'the view counts every stored event exactly once');

-- ---------------------------------------------------------------------------------------------
-- meter.api_keys_public
-- ---------------------------------------------------------------------------------------------
create temp table k as
select pg_temp.key_create('tap-vw-key-live', 'mk_ViewLiveKey0123456789ABCDEFGHIJKLMNOPQR') as live,
       pg_temp.key_create('tap-vw-key-dead', 'mk_ViewDeadKey0123456789ABCDEFGHIJKLMNOPQR') as dead;
select meter.api_key_revoke((select dead from k)::text) as revoked into temp table rk;

select columns_are('meter', 'api_keys_public',
                   array['id', 'name', 'prefix', 'created_at', 'revoked_at', 'active', 'scopes', 'customers']::name[],
                   'api_keys_public has exactly id, name, prefix, created_at, revoked_at, active, scopes, customers');

select hasnt_column('meter', 'api_keys_public', 'key_hash', 'api_keys_public has no key_hash column');

select is((select pg_catalog.count(*) from pg_catalog.pg_attribute
           where attrelid = 'meter.api_keys_public'::regclass and attnum > 0 and not attisdropped
             and atttypid = 'bytea'::regtype),
          0::bigint, 'api_keys_public exposes no bytea column at all');

select results_eq(
    $$select id, name, prefix, active, revoked_at from meter.api_keys_public
      where id in ((select live from k), (select dead from k)) order by name$$,
    $$values ((select dead from k), 'tap-vw-key-dead'::text, 'mk_ViewDeadK'::text, false, pg_catalog.now()),
             ((select live from k), 'tap-vw-key-live',       'mk_ViewLiveK',       true,  null)$$,
    'api_keys_public lists keys with prefix and active = (revoked_at is null)');

select is((select pg_catalog.count(*) from meter.api_keys_public p join meter.api_keys a on a.id = p.id
           where pg_catalog.strpos(p::text, pg_catalog.encode(a.key_hash, 'hex')) > 0),
          0::bigint, 'no public row carries its key''s hash in any form');

select * from finish();
rollback;
