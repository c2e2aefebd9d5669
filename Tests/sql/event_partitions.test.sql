-- meter.events partitioned by UTC month (migration 0021, decision 121): the partitions and their
-- runway, the key table that keeps idempotency permanent, and verdicts once a month is archived.
--
-- Archiving is emulated here as `meterctl events archive` leaves the database (the digest kept
-- with each key, the month recorded in meter.event_archives, its partition detached and
-- dropped); the command itself (export, SHA-256, hash check) is tested in Tests/cli.
begin;
select plan(24);

-- ---------------------------------------------------------------------------------------------
-- The layout.
-- ---------------------------------------------------------------------------------------------
select is((select c.relkind::text from pg_catalog.pg_class c where c.oid = 'meter.events'::regclass), 'p',
          'meter.events is a partitioned table');
select results_eq(
    $$select p.partstrat::text collate "default", a.attname::text collate "default"
      from pg_catalog.pg_partitioned_table p
      join pg_catalog.pg_attribute a on a.attrelid = p.partrelid and a.attnum = p.partattrs[0]
      where p.partrelid = 'meter.events'::regclass$$,
    $$values ('r', 'occurred_at')$$,
    'partitioned by range of occurred_at');
select is((select pg_catalog.count(*) from pg_catalog.pg_partitioned_table
           where partrelid = 'meter.events'::regclass and partdefid <> 0), 0::bigint,
          'no default partition: an event of a month without a partition is refused, not swallowed');
select cmp_ok((select runway_seconds from meter.events_partition_runway), '>=', (60 * 86400)::bigint,
              'after migrate the partitions reach at least two months ahead (migrate makes three)');

-- ---------------------------------------------------------------------------------------------
-- meter.events_partitions_ensure.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select partition_name, range_from, range_to, created
      from meter.events_partitions_ensure('2031-01-15', '2031-02-01')$$,
    $$values ('events_2031_01'::text, '2031-01-01 00:00+00'::timestamptz, '2031-02-01 00:00+00'::timestamptz, true),
             ('events_2031_02', '2031-02-01 00:00+00', '2031-03-01 00:00+00', true)$$,
    'ensure creates each missing month of the range, named and bounded in UTC');
select results_eq(
    $$select partition_name, created from meter.events_partitions_ensure('2031-01-01', '2031-02-28')$$,
    $$values ('events_2031_01'::text, false), ('events_2031_02', false)$$,
    'a second call creates nothing');
select throws_ok($$select * from meter.events_partitions_ensure('2031-02-01', '2031-01-01')$$, '22023', null,
                 'from after through is refused (22023)');
select throws_ok($$select * from meter.events_partitions_ensure('2031-01-01', '2041-01-01')$$, '22023', null,
                 'more than 120 months in one call is refused (22023)');

create temp table fx as
select meter.customer_upsert('tap-part-a') as cust,
       meter.meter_upsert('tap.part.tokens', 'sum') as m_tokens;

select throws_ok(
    $$select * from meter.event_ingest('[{"customer": "tap-part-a", "meter": "tap.part.tokens", "idempotency_key": "far",
                                          "occurred_at": "2035-06-01T00:00:00Z"}]'::jsonb, interval '20 years')$$,
    '23514', null,
    'an event of a month without a partition fails its insert (23514; serve answers 503), nothing is stored');

-- ---------------------------------------------------------------------------------------------
-- Keys: every stored event has its key, with its id and occurred_at.
-- ---------------------------------------------------------------------------------------------
create temp table ingested as
select * from meter.event_ingest(
    '[{"customer": "tap-part-a", "meter": "tap.part.tokens", "idempotency_key": "may-1", "occurred_at": "2024-05-10T10:00:00Z", "value": "5.00", "properties": {"model": "m1"}},
      {"customer": "tap-part-a", "meter": "tap.part.tokens", "idempotency_key": "may-2", "occurred_at": "2024-05-11T10:00:00Z", "value": 7},
      {"customer": "tap-part-a", "meter": "tap.part.tokens", "idempotency_key": "jun-1", "occurred_at": "2024-06-01T00:00:00Z", "value": 1}]'::jsonb,
    interval '5 minutes', interval '10 years');
select results_eq($$select status from ingested order by ord$$, $$values ('accepted'::text), ('accepted'), ('accepted')$$,
                  'setup: three events accepted (two in May 2024, one in June)');
select set_eq(
    $$select k.idempotency_key, k.event_id, k.occurred_at, k.archived_digest is null
      from meter.event_keys k where k.customer_id = (select cust from fx)$$,
    $$select e.idempotency_key, e.id, e.occurred_at, true from meter.events e where e.customer_id = (select cust from fx)$$,
    'each event''s key is in meter.event_keys with the event''s id and occurred_at');
select results_eq(
    $$select c.relname::text collate "default" from meter.events e join pg_catalog.pg_class c on c.oid = e.tableoid
      where e.customer_id = (select cust from fx) order by e.occurred_at$$,
    $$values ('events_2024_05'::text), ('events_2024_05'), ('events_2024_06')$$,
    'each event is stored in its UTC month''s partition');

select results_eq(
    $$select status from meter.event_cancel('[{"customer": "tap-part-a", "idempotency_key": "may-2"}]')$$,
    $$values ('cancelled'::text)$$,
    'setup: may-2 cancelled before its month is archived');

-- ---------------------------------------------------------------------------------------------
-- May 2024 archived (as meterctl events archive leaves it).
-- ---------------------------------------------------------------------------------------------
create temp table may_ids as
select id, idempotency_key from meter.events
where customer_id = (select cust from fx) and occurred_at >= '2024-05-01 00:00+00' and occurred_at < '2024-06-01 00:00+00';
update meter.event_keys k
set archived_digest = meter._event_digest(e.meter_id, e.occurred_at, e.value, e.properties)
from meter.events_2024_05 e
where k.customer_id = e.customer_id and k.idempotency_key = e.idempotency_key;
insert into meter.event_archives (period_start, period_end, events, file, sha256, hashes_checked)
values ('2024-05-01 00:00+00', '2024-06-01 00:00+00', (select pg_catalog.count(*) from meter.events_2024_05),
        'events-2024-05.copy', pg_catalog.repeat('0', 64), 0);
alter table meter.events detach partition meter.events_2024_05;
drop table meter.events_2024_05;

select is_empty($$select 1 from meter.events where id in (select id from may_ids)$$,
                'setup: May''s events are gone from meter.events');

select results_eq(
    $$select status, event_id, code from meter.event_ingest(
          '[{"customer": "tap-part-a", "meter": "tap.part.tokens", "idempotency_key": "may-1", "occurred_at": "2024-05-10T10:00:00Z", "value": "5.0", "properties": {"model": "m1"}}]'::jsonb)$$,
    $$select 'duplicate'::text, id, null::text from may_ids where idempotency_key = 'may-1'$$,
    'a retry of an archived event (same content, value 5.0 for 5.00) is a duplicate carrying its id, years later');
select results_eq(
    $$select status, event_id, code from meter.event_ingest(
          '[{"customer": "tap-part-a", "meter": "tap.part.tokens", "idempotency_key": "may-1", "occurred_at": "2024-05-10T10:00:00Z", "value": 6, "properties": {"model": "m1"}}]'::jsonb)$$,
    $$select 'conflict'::text, id, 'idempotency_key_conflict'::text from may_ids where idempotency_key = 'may-1'$$,
    'the same key with another value is a conflict');
select results_eq(
    $$select status, code from meter.event_ingest(
          '[{"customer": "tap-part-a", "meter": "tap.part.tokens", "idempotency_key": "may-1", "occurred_at": "2024-05-10T10:00:00Z", "value": "5", "properties": {"model": "m2"}}]'::jsonb)$$,
    $$values ('conflict'::text, 'idempotency_key_conflict'::text)$$,
    'and so with other properties');
select results_eq(
    $$select verdict from meter.event_redeliveries
      where event_id = (select id from may_ids where idempotency_key = 'may-1') order by id$$,
    $$values ('duplicate'::text), ('conflict'), ('conflict')$$,
    'each redelivery of the archived event is audited against its id');
select results_eq(
    $$select status, code, field from meter.event_cancel('[{"customer": "tap-part-a", "idempotency_key": "may-1"}]')$$,
    $$values ('rejected'::text, 'event_archived'::text, 'idempotency_key'::text)$$,
    'cancelling an archived event is refused: event_archived (its invoice is final)');
select results_eq(
    $$select status from meter.event_cancel('[{"customer": "tap-part-a", "idempotency_key": "may-2"}]')$$,
    $$values ('already_cancelled'::text)$$,
    'an archived event cancelled before is already_cancelled');
select results_eq(
    $$select status from meter.event_cancel('[{"customer": "tap-part-a", "idempotency_key": "jun-1"}]')$$,
    $$values ('cancelled'::text)$$,
    'an event of a month still online is cancelled as before');
select results_eq(
    $$select partition_name, created from meter.events_partitions_ensure('2024-05-01', '2024-06-01')$$,
    $$values ('events_2024_05'::text, false), ('events_2024_06', false)$$,
    'ensure never re-creates an archived month');
select is(pg_catalog.to_regclass('meter.events_2024_05'), null, 'and the partition of May 2024 stays absent');
select results_eq(
    $$select status from meter.event_ingest(
          '[{"customer": "tap-part-a", "meter": "tap.part.tokens", "idempotency_key": "jun-2", "occurred_at": "2024-06-02T00:00:00Z"}]'::jsonb,
          interval '5 minutes', interval '10 years')$$,
    $$values ('accepted'::text)$$,
    'new events of online months are stored as before');

select * from finish();
rollback;
