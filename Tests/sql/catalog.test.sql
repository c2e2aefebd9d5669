-- The schema as `meterctl migrate` leaves it: ledger tables and their content, the tables, views
-- and type of 0001_init, and the function set with its hardening (search_path pinned on every
-- function, SECURITY DEFINER only where documented).
-- Functions that belong to an extension (e.g. pgTAP, if it was installed into schema meter) are
-- not the project's and are left out of the function checks.
begin;
select plan(26);

-- ---------------------------------------------------------------------------------------------
-- Migration ledger.
-- ---------------------------------------------------------------------------------------------
select has_table('meter', 'schema_migrations', 'ledger meter.schema_migrations exists');
select has_table('meter', 'schema_functions', 'ledger meter.schema_functions exists');
select col_is_pk('meter', 'schema_migrations', 'version', 'schema_migrations is keyed by version');
select col_is_pk('meter', 'schema_functions', 'name', 'schema_functions is keyed by file name');

select results_eq(
    $$select version, name from meter.schema_migrations where version = 1$$,
    $$values (1, '0001_init.sql'::text)$$,
    'migration version 1 (0001_init.sql) is recorded once');

select is_empty(
    $$select version from meter.schema_migrations where checksum !~ '^[0-9a-f]{64}$' or execution_ms < 0$$,
    'every recorded migration has a SHA-256 hex checksum and a non-negative duration');

select set_has(
    $$select name from meter.schema_functions$$,
    $$values ('authenticate_api_key.sql'::text), ('create_api_key.sql'), ('ingest_events.sql'),
             ('revoke_api_key.sql'), ('upsert_customer.sql'), ('upsert_meter.sql'),
             ('v_api_keys_public.sql'), ('v_event_daily.sql')$$,
    'every sql/functions file is recorded in schema_functions');

select is_empty(
    $$select name from meter.schema_functions where checksum !~ '^[0-9a-f]{64}$'$$,
    'every recorded function file has a SHA-256 hex checksum');

-- ---------------------------------------------------------------------------------------------
-- Tables, views, type.
-- ---------------------------------------------------------------------------------------------
select tables_are('meter',
    array['schema_migrations', 'schema_functions', 'customers', 'meters', 'api_keys', 'events',
          'event_redeliveries']::name[],
    'schema meter holds exactly the ledger and the 0001 tables');

select col_is_pk('meter', 'customers', 'id', 'customers.id is the primary key');
select col_is_pk('meter', 'meters', 'id', 'meters.id is the primary key');
select col_is_pk('meter', 'api_keys', 'id', 'api_keys.id is the primary key');
select col_is_pk('meter', 'events', 'id', 'events.id is the primary key');
select col_is_pk('meter', 'event_redeliveries', 'id', 'event_redeliveries.id is the primary key');
select col_is_unique('meter', 'customers', 'external_id', 'customers.external_id is unique');
select col_is_unique('meter', 'meters', 'code', 'meters.code is unique');
select col_is_unique('meter', 'api_keys', 'key_hash', 'api_keys.key_hash is unique');

select has_view('meter', 'event_daily', 'view meter.event_daily exists');
select has_view('meter', 'api_keys_public', 'view meter.api_keys_public exists');

select has_composite('meter', 'ingest_verdict', 'composite type meter.ingest_verdict exists');
select results_eq(
    $$select a.attname::text collate "default", pg_catalog.format_type(a.atttypid, a.atttypmod)
      from pg_catalog.pg_attribute a
      where a.attrelid = (select typrelid from pg_catalog.pg_type
                          where oid = 'meter.ingest_verdict'::regtype)
        and a.attnum > 0 and not a.attisdropped
      order by a.attnum$$,
    $$values ('ord', 'integer'), ('status', 'text'), ('event_id', 'bigint'),
             ('code', 'text'), ('field', 'text'), ('reason', 'text')$$,
    'ingest_verdict is (ord integer, status text, event_id bigint, code text, field text, reason text)');

-- ---------------------------------------------------------------------------------------------
-- Functions.
-- ---------------------------------------------------------------------------------------------
create temp view own_functions as
select p.oid, p.proname::text collate "default" as proname,
       (p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')') collate "default" as signature,
       p.prosecdef, p.proconfig
from pg_catalog.pg_proc p
where p.pronamespace = 'meter'::regnamespace
  and not exists (select 1 from pg_catalog.pg_depend d
                  where d.classid = 'pg_catalog.pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e');

select results_eq(
    $$select signature from own_functions order by signature$$,
    $$values ('_refuse_delete()'),
             ('authenticate_api_key(p_token text)'),
             ('create_api_key(p_name text, p_token text)'),
             ('ingest_events(p_events jsonb, p_max_future interval, p_max_past interval, p_api_token text)'),
             ('revoke_api_key(p_key text)'),
             ('upsert_customer(p_external_id text, p_name text, p_billing_timezone text)'),
             ('upsert_meter(p_code text, p_aggregation text, p_unique_property text, p_name text, p_unit text)')$$,
    'schema meter has exactly the seven documented functions');

select is_empty(
    $$select signature from own_functions
      where not exists (select 1 from pg_catalog.unnest(coalesce(proconfig, '{}')) c where c like 'search_path=%')$$,
    'every function in schema meter sets search_path in proconfig');

select is_empty(
    $$select signature from own_functions
      where not ('search_path=pg_catalog, pg_temp' = any (coalesce(proconfig, '{}')))$$,
    'every function pins search_path to exactly pg_catalog, pg_temp (pg_temp last, no public)');

select results_eq(
    $$select proname from own_functions where prosecdef order by proname$$,
    $$values ('authenticate_api_key'::text), ('ingest_events')$$,
    'only authenticate_api_key and ingest_events are SECURITY DEFINER');

select is_empty(
    $$select signature from own_functions f
      where pg_catalog.has_function_privilege('public', f.oid, 'EXECUTE')$$,
    'no function in schema meter is executable by PUBLIC');

select * from finish();
rollback;
