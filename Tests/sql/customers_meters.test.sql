-- The billing catalog: meter.upsert_customer and meter.upsert_meter (idempotent creation,
-- validation, refusal to change a meter's aggregation in place).
begin;
select plan(25);

-- ---------------------------------------------------------------------------------------------
-- upsert_customer
-- ---------------------------------------------------------------------------------------------
create temp table c as
select meter.upsert_customer('tap-cm-acme', 'Acme TAP', 'Europe/Paris') as acme;

select is(meter.upsert_customer('tap-cm-acme', 'Acme TAP', 'Europe/Paris'), (select acme from c),
          'upsert_customer twice with the same arguments returns the same id');

select is((select pg_catalog.count(*) from meter.customers where external_id = 'tap-cm-acme'), 1::bigint,
          'and leaves exactly one customer row');

select is(meter.upsert_customer('tap-cm-acme', null, 'America/New_York'), (select acme from c),
          'an update by external_id returns the same id');

select results_eq(
    $$select external_id, name, billing_timezone from meter.customers where id = (select acme from c)$$,
    $$values ('tap-cm-acme'::text, 'Acme TAP'::text, 'America/New_York'::text)$$,
    'a NULL name keeps the stored name; the timezone is updated');

create temp table plain as select meter.upsert_customer('tap-cm-plain') as id;

select results_eq(
    $$select name, billing_timezone from meter.customers where id = (select id from plain)$$,
    $$values (null::text, 'UTC'::text)$$,
    'defaults: no name, billing timezone UTC');

select throws_ok(
    $$select meter.upsert_customer('tap-cm-acme', 'Acme TAP', 'Mars/Olympus_Mons')$$,
    '22023', 'unknown billing timezone ''Mars/Olympus_Mons''',
    'an unknown timezone raises 22023');

select results_eq(
    $$select name, billing_timezone from meter.customers where id = (select acme from c)$$,
    $$values ('Acme TAP'::text, 'America/New_York'::text)$$,
    'a refused update changes nothing');

select throws_ok(
    $$select meter.upsert_customer('tap-cm-nulltz', null, null)$$,
    '22023', null,
    'a NULL timezone raises 22023');

select is((select pg_catalog.count(*) from meter.customers where external_id in ('tap-cm-nulltz')), 0::bigint,
          'no customer is created when the timezone is refused');

select throws_ok(
    $$select meter.upsert_customer('', null, 'UTC')$$,
    '23514', 'new row for relation "customers" violates check constraint "customers_external_id_length"',
    'an empty external id is refused (23514)');

-- ---------------------------------------------------------------------------------------------
-- upsert_meter
-- ---------------------------------------------------------------------------------------------
create temp table m as
select meter.upsert_meter('tap.cm.calls')                                    as calls,
       meter.upsert_meter('tap.cm.users', 'unique_count', 'user_id', 'Users') as users;

select is(meter.upsert_meter('tap.cm.calls'), (select calls from m),
          'upsert_meter with an identical definition returns the same id');

select is(meter.upsert_meter('tap.cm.calls', 'count', null, 'API calls', 'call'), (select calls from m),
          'same definition with a name and unit: same id');

select is(meter.upsert_meter('tap.cm.calls', 'count'), (select calls from m),
          'same definition without name and unit: same id');

select results_eq(
    $$select code, aggregation, unique_property, name, unit from meter.meters where id = (select calls from m)$$,
    $$values ('tap.cm.calls'::text, 'count'::text, null::text, 'API calls'::text, 'call'::text)$$,
    'default aggregation is count; name and unit are kept when later calls omit them');

select is(meter.upsert_meter('tap.cm.users', 'unique_count', 'user_id'), (select users from m),
          'unique_count with the same unique_property: same id');

select throws_ok(
    $$select meter.upsert_meter('tap.cm.calls', 'sum')$$,
    '23505', 'meter ''tap.cm.calls'' exists with aggregation count (unique_property none)',
    'a different aggregation for an existing code raises 23505');

select throws_ok(
    $$select meter.upsert_meter('tap.cm.users', 'unique_count', 'account_id')$$,
    '23505', 'meter ''tap.cm.users'' exists with aggregation unique_count (unique_property user_id)',
    'a different unique_property for an existing code raises 23505');

select results_eq(
    $$select code, aggregation, unique_property from meter.meters
      where id in ((select calls from m), (select users from m)) order by code$$,
    $$values ('tap.cm.calls'::text, 'count'::text, null::text), ('tap.cm.users', 'unique_count', 'user_id')$$,
    'refused changes leave both definitions as they were');

select is((select pg_catalog.count(*) from meter.meters where code like 'tap.cm.%'), 2::bigint,
          'no extra meter rows were created');

select throws_ok(
    $$select meter.upsert_meter('tap.cm.uniq', 'unique_count')$$,
    '23514', 'new row for relation "meters" violates check constraint "meters_unique_property"',
    'unique_count without unique_property is refused (23514)');

select throws_ok(
    $$select meter.upsert_meter('tap.cm.sum-prop', 'sum', 'user_id')$$,
    '23514', 'new row for relation "meters" violates check constraint "meters_unique_property"',
    'a unique_property on a non-unique_count meter is refused (23514)');

select throws_ok(
    $$select meter.upsert_meter('tap.cm.avg', 'avg')$$,
    '23514', 'new row for relation "meters" violates check constraint "meters_aggregation"',
    'an unknown aggregation is refused (23514)');

select throws_ok(
    $$select meter.upsert_meter('tap cm spaces')$$,
    '23514', 'new row for relation "meters" violates check constraint "meters_code_format"',
    'a code with spaces is refused (23514)');

select throws_ok(
    $$select meter.upsert_meter('-tap.cm.leading-dash')$$,
    '23514', 'new row for relation "meters" violates check constraint "meters_code_format"',
    'a code must start with a letter or digit (23514)');

select lives_ok(
    $$select meter.upsert_meter('tap.cm:ok/with_all-chars.1', 'max')$$,
    'a code using every allowed punctuation (. : / _ -) is accepted');

select * from finish();
rollback;
