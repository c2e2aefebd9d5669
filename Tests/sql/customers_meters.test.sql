-- The billing catalog: meter.customer_upsert and meter.meter_upsert (idempotent creation,
-- validation; a meter's definition lives in meter.meter_versions, and a changed definition becomes
-- a new version instead of being changed in place: the version rules are in
-- meter_versions.test.sql).
begin;
select plan(27);

-- ---------------------------------------------------------------------------------------------
-- customer_upsert
-- ---------------------------------------------------------------------------------------------
create temp table c as
select meter.customer_upsert('tap-cm-acme', 'Acme TAP', 'Europe/Paris') as acme;

select is(meter.customer_upsert('tap-cm-acme', 'Acme TAP', 'Europe/Paris'), (select acme from c),
          'customer_upsert twice with the same arguments returns the same id');

select is((select pg_catalog.count(*) from meter.customers where external_id = 'tap-cm-acme'), 1::bigint,
          'and leaves exactly one customer row');

select is(meter.customer_upsert('tap-cm-acme', null, 'America/New_York'), (select acme from c),
          'an update by external_id returns the same id');

select results_eq(
    $$select external_id, name, billing_timezone from meter.customers where id = (select acme from c)$$,
    $$values ('tap-cm-acme'::text, 'Acme TAP'::text, 'America/New_York'::text)$$,
    'a NULL name keeps the stored name; the timezone is updated');

create temp table plain as select meter.customer_upsert('tap-cm-plain') as id;

select results_eq(
    $$select name, billing_timezone from meter.customers where id = (select id from plain)$$,
    $$values (null::text, 'UTC'::text)$$,
    'defaults: no name, billing timezone UTC');

select throws_ok(
    $$select meter.customer_upsert('tap-cm-acme', 'Acme TAP', 'Mars/Olympus_Mons')$$,
    '22023', 'unknown billing timezone ''Mars/Olympus_Mons''',
    'an unknown timezone raises 22023');

select results_eq(
    $$select name, billing_timezone from meter.customers where id = (select acme from c)$$,
    $$values ('Acme TAP'::text, 'America/New_York'::text)$$,
    'a refused update changes nothing');

select throws_ok(
    $$select meter.customer_upsert('tap-cm-nulltz', null, null)$$,
    '22023', null,
    'a NULL timezone raises 22023');

select is((select pg_catalog.count(*) from meter.customers where external_id in ('tap-cm-nulltz')), 0::bigint,
          'no customer is created when the timezone is refused');

select throws_ok(
    $$select meter.customer_upsert('', null, 'UTC')$$,
    '23514', 'new row for relation "customers" violates check constraint "customers_external_id_length"',
    'an empty external id is refused (23514)');

-- ---------------------------------------------------------------------------------------------
-- meter_upsert
-- ---------------------------------------------------------------------------------------------
create temp table m as
select meter.meter_upsert('tap.cm.calls')                                    as calls,
       meter.meter_upsert('tap.cm.users', 'unique_count', 'user_id', 'Users') as users;

select is(meter.meter_upsert('tap.cm.calls'), (select calls from m),
          'meter_upsert with an identical definition returns the same id');

select is(meter.meter_upsert('tap.cm.calls', 'count', null, 'API calls', 'call'), (select calls from m),
          'same definition with a name and unit: same id');

select is(meter.meter_upsert('tap.cm.calls', 'count'), (select calls from m),
          'same definition without name and unit: same id');

select results_eq(
    $$select m.code, v.version, v.aggregation, v.unique_property, v.effective_from, m.name, m.unit
      from meter.meters m join meter.meter_versions v on v.meter_id = m.id
      where m.id = (select calls from m)$$,
    $$values ('tap.cm.calls'::text, 1, 'count'::text, null::text, '-infinity'::timestamptz,
              'API calls'::text, 'call'::text)$$,
    'default aggregation is count, as version 1 in force since -infinity; name and unit are kept '
    'when later calls omit them');

select is(meter.meter_upsert('tap.cm.users', 'unique_count', 'user_id'), (select users from m),
          'unique_count with the same unique_property: same id');

select results_eq(
    $$select m.code, v.version, v.aggregation, v.unique_property, v.effective_from
      from meter.meters m join meter.meter_versions v on v.meter_id = m.id
      where m.code like 'tap.cm.%' order by m.code, v.version$$,
    $$values ('tap.cm.calls'::text, 1, 'count'::text, null::text, '-infinity'::timestamptz),
             ('tap.cm.users', 1, 'unique_count', 'user_id', '-infinity')$$,
    'identical upserts add no version: one version per meter');

select is(meter.meter_upsert('tap.cm.calls', 'sum'), (select calls from m),
          'a different aggregation for an existing code is no error: same id (a new version)');

select results_eq(
    $$select version, aggregation, effective_from from meter.meter_versions
      where meter_id = (select calls from m) order by version$$,
    $$values (1, 'count'::text, '-infinity'::timestamptz),
             (2, 'sum', pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC') + interval '1 hour')$$,
    'version 1 is kept as it was; version 2 is in force from the next UTC hour');

select is((select pg_catalog.count(*) from meter.meters where code like 'tap.cm.%'), 2::bigint,
          'no extra meter rows were created');

select throws_ok(
    $$select meter.meter_upsert('tap.cm.uniq', 'unique_count')$$,
    '23514', 'new row for relation "meter_versions" violates check constraint "meter_versions_unique_property"',
    'unique_count without unique_property is refused (23514)');

select throws_ok(
    $$select meter.meter_upsert('tap.cm.sum-prop', 'sum', 'user_id')$$,
    '23514', 'new row for relation "meter_versions" violates check constraint "meter_versions_unique_property"',
    'a unique_property on a non-unique_count meter is refused (23514)');

select throws_ok(
    $$select meter.meter_upsert('tap.cm.avg', 'avg')$$,
    '23514', 'new row for relation "meter_versions" violates check constraint "meter_versions_aggregation"',
    'an unknown aggregation is refused (23514)');

select is((select pg_catalog.count(*) from meter.meters where code in ('tap.cm.uniq', 'tap.cm.sum-prop', 'tap.cm.avg')),
          0::bigint, 'a meter whose definition is refused is not created either');

select throws_ok(
    $$select meter.meter_upsert('tap.cm.users', 'avg', null, null, null,
                                pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC') + interval '5 hours')$$,
    '23514', 'new row for relation "meter_versions" violates check constraint "meter_versions_aggregation"',
    'an unknown aggregation as a new version of an existing meter is refused too (23514)');

select throws_ok(
    $$select meter.meter_upsert('tap cm spaces')$$,
    '23514', 'new row for relation "meters" violates check constraint "meters_code_format"',
    'a code with spaces is refused (23514)');

select throws_ok(
    $$select meter.meter_upsert('-tap.cm.leading-dash')$$,
    '23514', 'new row for relation "meters" violates check constraint "meters_code_format"',
    'a code must start with a letter or digit (23514)');

select lives_ok(
    $$select meter.meter_upsert('tap.cm:ok/with_all-chars.1', 'max')$$,
    'a code using every allowed punctuation (. : / _ -) is accepted');

select * from finish();
rollback;
