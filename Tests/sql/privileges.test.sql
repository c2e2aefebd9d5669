-- Least privilege: meter_ingest may only authenticate a key, ingest, cancel events, read usage and
-- the rollup lag in seconds (through SECURITY DEFINER functions); meter_analyst may only read the
-- reporting views, the rollup tables and meter.rollup_lag, and call meter.usage,
-- meter.rollup_verify and meter.rollup_lag_seconds; nobody but the owner runs meter.rollup_run or
-- changes the catalog; PUBLIC gets nothing. Billing sync (0003): meter_analyst reads the billing
-- tables and the views sync_status and sync_backlog, never the webhook signing secrets; meter_ingest
-- gets nothing of it; nobody but the owner runs the sync, link, price and webhook functions.
-- Month close (0004): meter_analyst reads currencies, plans, prices, subscriptions, invoices, their
-- lines and the views late_after_close and reconciliation (whose calls of meter._period_usage and
-- meter.price_amount run with the reader's rights: analysts may execute those two, nothing else of
-- the month close); meter_ingest gets nothing of it; only the owner closes, prices and subscribes.
-- First the catalog (what is granted), then behaviour under SET LOCAL ROLE (what actually works).
begin;
-- Under SET ROLE, "$user" no longer names the schema pgTAP may live in: pin search_path (for this
-- transaction) to pgTAP's own schema so its unqualified functions resolve for every role.
do $$
begin
    perform pg_catalog.set_config('search_path',
        (select pg_catalog.quote_ident(n.nspname) from pg_catalog.pg_extension e
         join pg_catalog.pg_namespace n on n.oid = e.extnamespace where e.extname = 'pgtap') || ', pg_catalog',
        true);
end
$$;
select plan(168);
\ir support/fixtures.sql

-- ---------------------------------------------------------------------------------------------
-- Roles.
-- ---------------------------------------------------------------------------------------------
select has_role('meter_ingest', 'role meter_ingest exists');
select has_role('meter_analyst', 'role meter_analyst exists');
select results_eq(
    $$select rolname::text collate "default", rolcanlogin, rolsuper, rolinherit from pg_catalog.pg_roles
      where rolname in ('meter_ingest', 'meter_analyst') order by rolname$$,
    $$values ('meter_analyst', false, false, true), ('meter_ingest', false, false, true)$$,
    'both are NOLOGIN, non-superuser group roles');

-- ---------------------------------------------------------------------------------------------
-- Schema.
-- ---------------------------------------------------------------------------------------------
select schema_privs_are('meter', 'meter_ingest',  array['USAGE']::name[], 'meter_ingest: USAGE on schema meter only');
select schema_privs_are('meter', 'meter_analyst', array['USAGE']::name[], 'meter_analyst: USAGE on schema meter only');
select schema_privs_are('meter', 'public',        array[]::name[],        'PUBLIC: nothing on schema meter');

-- ---------------------------------------------------------------------------------------------
-- Functions.
-- ---------------------------------------------------------------------------------------------
select function_privs_are('meter', 'event_ingest', array['jsonb', 'interval', 'interval', 'bytea']::name[],
                          'meter_ingest', array['EXECUTE']::name[], 'meter_ingest may execute event_ingest');
select function_privs_are('meter', 'event_ingest_arrays', array['text[]', 'text[]', 'text[]', 'timestamptz[]', 'numeric[]', 'jsonb[]', 'interval', 'interval', 'bytea']::name[],
                          'meter_ingest', array['EXECUTE']::name[], 'meter_ingest may execute event_ingest_arrays');
select function_privs_are('meter', 'api_key_authenticate', array['bytea']::name[],
                          'meter_ingest', array['EXECUTE']::name[], 'meter_ingest may execute api_key_authenticate');
select function_privs_are('meter', 'api_key_create', array['text', 'text', 'bytea', 'text[]', 'text[]']::name[],
                          'meter_ingest', array[]::name[], 'meter_ingest may not execute api_key_create');
select function_privs_are('meter', 'api_key_revoke', array['text']::name[],
                          'meter_ingest', array[]::name[], 'meter_ingest may not execute api_key_revoke');
select function_privs_are('meter', 'customer_upsert', array['text', 'text', 'text']::name[],
                          'meter_ingest', array[]::name[], 'meter_ingest may not execute customer_upsert');
select function_privs_are('meter', 'meter_upsert', array['text', 'text', 'text', 'text', 'text', 'timestamptz', 'text[]']::name[],
                          'meter_ingest', array[]::name[], 'meter_ingest may not execute meter_upsert');
select function_privs_are('meter', 'meter_upsert', array['text', 'text', 'text', 'text', 'text', 'timestamptz', 'text[]']::name[],
                          'meter_analyst', array[]::name[], 'meter_analyst may not execute meter_upsert');
select function_privs_are('meter', 'event_cancel', array['jsonb', 'bytea']::name[],
                          'meter_ingest', array['EXECUTE']::name[], 'meter_ingest may execute event_cancel');
select function_privs_are('meter', 'event_cancel', array['jsonb', 'bytea']::name[],
                          'meter_analyst', array[]::name[], 'meter_analyst may not execute event_cancel');
select function_privs_are('meter', 'usage', array['text', 'text', 'timestamptz', 'timestamptz', 'text', 'text[]', 'jsonb']::name[],
                          'meter_ingest', array['EXECUTE']::name[], 'meter_ingest may execute usage');
select function_privs_are('meter', 'usage', array['text', 'text', 'timestamptz', 'timestamptz', 'text', 'text[]', 'jsonb']::name[],
                          'meter_analyst', array['EXECUTE']::name[], 'meter_analyst may execute usage');
select function_privs_are('meter', 'rollup_verify', array['timestamptz', 'timestamptz']::name[],
                          'meter_analyst', array['EXECUTE']::name[], 'meter_analyst may execute rollup_verify');
select function_privs_are('meter', 'rollup_verify', array['timestamptz', 'timestamptz']::name[],
                          'meter_ingest', array[]::name[], 'meter_ingest may not execute rollup_verify');
select function_privs_are('meter', 'rollup_run', array['integer', 'integer']::name[],
                          'meter_ingest', array[]::name[], 'meter_ingest may not execute rollup_run');
select function_privs_are('meter', 'rollup_run', array['integer', 'integer']::name[],
                          'meter_analyst', array[]::name[], 'meter_analyst may not execute rollup_run');
select function_privs_are('meter', 'rollup_run', array['integer', 'integer']::name[],
                          'public', array[]::name[], 'PUBLIC may not execute rollup_run');
select function_privs_are('meter', 'rollup_shards_set', array['integer']::name[],
                          'meter_ingest', array[]::name[], 'meter_ingest may not execute rollup_shards_set');
select function_privs_are('meter', 'rollup_shards_set', array['integer']::name[],
                          'meter_analyst', array[]::name[], 'meter_analyst may not execute rollup_shards_set');
select function_privs_are('meter', 'rollup_shards_set', array['integer']::name[],
                          'public', array[]::name[], 'PUBLIC may not execute rollup_shards_set');
select is((select pg_catalog.array_agg(r.rolname::text order by r.rolname)
           from pg_catalog.pg_roles r
           where pg_catalog.has_function_privilege(r.oid, 'meter.rollup_run(integer, integer)', 'EXECUTE')
             and not r.rolsuper
             and r.oid <> (select proowner from pg_catalog.pg_proc where oid = 'meter.rollup_run(integer, integer)'::regprocedure)),
          null::text[],
          'no role but the owner (and superusers) may execute rollup_run');
select function_privs_are('meter', 'rollup_lag_seconds', array[]::name[],
                          'meter_ingest', array['EXECUTE']::name[], 'meter_ingest may execute rollup_lag_seconds');
select function_privs_are('meter', 'rollup_lag_seconds', array[]::name[],
                          'meter_analyst', array['EXECUTE']::name[], 'meter_analyst may execute rollup_lag_seconds');
select function_privs_are('meter', 'rollup_lag_seconds', array[]::name[],
                          'public', array[]::name[], 'PUBLIC may not execute rollup_lag_seconds');
select function_privs_are('meter', 'event_ingest', array['jsonb', 'interval', 'interval', 'bytea']::name[],
                          'meter_analyst', array[]::name[], 'meter_analyst may not execute event_ingest');
select function_privs_are('meter', 'event_ingest_arrays', array['text[]', 'text[]', 'text[]', 'timestamptz[]', 'numeric[]', 'jsonb[]', 'interval', 'interval', 'bytea']::name[],
                          'meter_analyst', array[]::name[], 'meter_analyst may not execute event_ingest_arrays');
select function_privs_are('meter', 'api_key_authenticate', array['bytea']::name[],
                          'meter_analyst', array[]::name[], 'meter_analyst may not execute api_key_authenticate');
select function_privs_are('meter', 'api_key_create', array['text', 'text', 'bytea', 'text[]', 'text[]']::name[],
                          'meter_analyst', array[]::name[], 'meter_analyst may not execute api_key_create');
select function_privs_are('meter', 'event_ingest', array['jsonb', 'interval', 'interval', 'bytea']::name[],
                          'public', array[]::name[], 'PUBLIC may not execute event_ingest');
select function_privs_are('meter', 'event_ingest_arrays', array['text[]', 'text[]', 'text[]', 'timestamptz[]', 'numeric[]', 'jsonb[]', 'interval', 'interval', 'bytea']::name[],
                          'public', array[]::name[], 'PUBLIC may not execute event_ingest_arrays');
select function_privs_are('meter', 'api_key_authenticate', array['bytea']::name[],
                          'public', array[]::name[], 'PUBLIC may not execute api_key_authenticate');

-- ---------------------------------------------------------------------------------------------
-- Tables and views.
-- ---------------------------------------------------------------------------------------------
select table_privs_are('meter', 'events',             'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.events');
select table_privs_are('meter', 'customers',          'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.customers');
select table_privs_are('meter', 'api_keys',           'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.api_keys');
select table_privs_are('meter', 'meters',             'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.meters');
select table_privs_are('meter', 'event_redeliveries', 'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.event_redeliveries');
select table_privs_are('meter', 'event_daily',        'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.event_daily');
select table_privs_are('meter', 'schema_migrations',  'meter_ingest', array['SELECT']::name[], 'meter_ingest: SELECT only on meter.schema_migrations');
select table_privs_are('meter', 'meter_versions',       'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.meter_versions');
select table_privs_are('meter', 'event_cancellations',  'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.event_cancellations');
select table_privs_are('meter', 'rollup_hourly',        'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.rollup_hourly');
select table_privs_are('meter', 'rollup_hourly_unique', 'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.rollup_hourly_unique');
select table_privs_are('meter', 'rollup_hourly_dims', 'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.rollup_hourly_dims');
select table_privs_are('meter', 'gauge_series', 'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.gauge_series');
select table_privs_are('meter', 'rollup_period', 'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.rollup_period');
select table_privs_are('meter', 'rollup_ledger', 'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.rollup_ledger');
select table_privs_are('meter', 'rollup_ledger_period', 'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.rollup_ledger_period');
select table_privs_are('meter', 'rollup_period_dims', 'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.rollup_period_dims');
select table_privs_are('meter', 'limit_usage', 'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.limit_usage (limit_check reads it as its owner)');
select table_privs_are('meter', 'rollup_watermark',     'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.rollup_watermark');
select table_privs_are('meter', 'rollup_lag',           'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.rollup_lag');
select table_privs_are('meter', 'meter_version_ranges', 'meter_ingest', array[]::name[], 'meter_ingest: no privilege on meter.meter_version_ranges');

select table_privs_are('meter', 'event_daily',        'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.event_daily');
select table_privs_are('meter', 'api_keys_public',    'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.api_keys_public');
select table_privs_are('meter', 'api_keys',           'meter_analyst', array[]::name[], 'meter_analyst: no privilege on meter.api_keys');
select table_privs_are('meter', 'events',             'meter_analyst', array[]::name[], 'meter_analyst: no privilege on meter.events');
select table_privs_are('meter', 'event_redeliveries', 'meter_analyst', array[]::name[], 'meter_analyst: no privilege on meter.event_redeliveries');
select table_privs_are('meter', 'schema_migrations',  'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.schema_migrations');
select table_privs_are('meter', 'meter_versions',       'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.meter_versions');
select table_privs_are('meter', 'event_cancellations',  'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.event_cancellations');
select table_privs_are('meter', 'rollup_hourly',        'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.rollup_hourly');
select table_privs_are('meter', 'rollup_hourly_unique', 'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.rollup_hourly_unique');
select table_privs_are('meter', 'rollup_hourly_dims', 'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.rollup_hourly_dims');
select table_privs_are('meter', 'gauge_series', 'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.gauge_series');
select table_privs_are('meter', 'rollup_period', 'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.rollup_period');
select table_privs_are('meter', 'rollup_ledger', 'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.rollup_ledger');
select table_privs_are('meter', 'rollup_ledger_period', 'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.rollup_ledger_period');
select table_privs_are('meter', 'rollup_period_dims', 'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.rollup_period_dims');
select table_privs_are('meter', 'limit_usage', 'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.limit_usage');
select table_privs_are('meter', 'rollup_watermark',     'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.rollup_watermark');
select table_privs_are('meter', 'rollup_lag',           'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.rollup_lag');
select table_privs_are('meter', 'meter_version_ranges', 'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.meter_version_ranges');
select table_privs_are('meter', 'meters',               'meter_analyst', array[]::name[], 'meter_analyst: no privilege on meter.meters');

-- Billing sync (0003).
select table_privs_are('meter', 'billing_prices',        'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.billing_prices');
select table_privs_are('meter', 'billing_customers',     'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.billing_customers');

select table_privs_are('meter', 'billing_links',         'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.billing_links');
select table_privs_are('meter', 'sync_outbox',           'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.sync_outbox');
select table_privs_are('meter', 'webhook_events',        'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.webhook_events');
select table_privs_are('meter', 'billing_invoices',      'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.billing_invoices');
select table_privs_are('meter', 'billing_invoice_lines', 'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.billing_invoice_lines');
select table_privs_are('meter', 'billing_usage',         'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.billing_usage');
select table_privs_are('meter', 'sync_status',           'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.sync_status');
select table_privs_are('meter', 'sync_backlog',          'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.sync_backlog');
select table_privs_are('meter', 'webhook_secrets',       'meter_analyst', array[]::name[], 'meter_analyst: no privilege on meter.webhook_secrets (signing secrets)');
select is(
    (select pg_catalog.array_agg(c.relname::text order by c.relname)
     from pg_catalog.pg_class c
     where c.relnamespace = 'meter'::regnamespace
       and c.relname in ('billing_prices', 'billing_customers', 'billing_links', 'sync_outbox', 'webhook_secrets',
                         'webhook_events', 'billing_invoices', 'billing_invoice_lines', 'billing_usage', 'sync_status', 'sync_backlog')
       and pg_catalog.has_table_privilege('meter_ingest', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')),
    null::text[],
    'meter_ingest: no privilege on any billing sync table or view');
select is(
    (select pg_catalog.array_agg(r.rolname::text order by r.rolname)
     from pg_catalog.pg_roles r
     where r.rolname in ('meter_ingest', 'meter_analyst', 'public')
       and pg_catalog.has_sequence_privilege(r.oid, 'meter.sync_claim_token', 'USAGE, SELECT, UPDATE')),
    null::text[],
    'neither meter_ingest nor meter_analyst may use or read the claim token sequence');
select is(
    (select pg_catalog.array_agg(p.oid::regprocedure::text || ' by ' || r.rolname order by 1)
     from pg_catalog.pg_proc p, pg_catalog.pg_roles r
     where p.pronamespace = 'meter'::regnamespace
       and p.proname in ('sync_claim', 'sync_succeeded', 'sync_failed', 'sync_retry', 'sync_refused', 'billing_price_set',
                         'billing_unlinked', 'billing_link_record', 'webhook_receive', 'webhook_process')
       and pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')
       and not r.rolsuper and r.oid <> p.proowner),
    null::text[],
    'no role but the owner (and superusers) may execute the sync, link, price and webhook functions');
select is((select pg_catalog.count(*) from pg_catalog.pg_proc p
           where p.pronamespace = 'meter'::regnamespace
             and p.proname in ('sync_claim', 'sync_succeeded', 'sync_failed', 'sync_retry', 'sync_refused', 'billing_price_set',
                               'billing_unlinked', 'billing_link_record', 'webhook_receive', 'webhook_process')),
          10::bigint, 'the check above covers the ten billing sync functions');

-- Retention (0009): the operator's (meterctl prune, serve's retention loop).
select is(
    (select pg_catalog.array_agg(r.rolname::text order by 1)
     from pg_catalog.pg_proc p, pg_catalog.pg_roles r
     where p.oid = 'meter.retention_prune(interval, interval, integer)'::regprocedure
       and pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')
       and not r.rolsuper and r.oid <> p.proowner),
    null::text[],
    'no role but the owner (and superusers) may execute retention_prune');

-- Month close (0004).
select table_privs_are('meter', 'currencies',       'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.currencies');
select table_privs_are('meter', 'plans',            'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.plans');
select table_privs_are('meter', 'plan_prices',      'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.plan_prices');
select table_privs_are('meter', 'customer_plans',   'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.customer_plans');
select table_privs_are('meter', 'invoices',         'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.invoices');
select table_privs_are('meter', 'invoice_lines',    'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.invoice_lines');
select table_privs_are('meter', 'late_after_close', 'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.late_after_close');
select table_privs_are('meter', 'reconciliation',   'meter_analyst', array['SELECT']::name[], 'meter_analyst: SELECT only on meter.reconciliation');
select is(
    (select pg_catalog.array_agg(c.relname::text order by c.relname)
     from pg_catalog.pg_class c
     where c.relnamespace = 'meter'::regnamespace
       and c.relname in ('currencies', 'plans', 'plan_prices', 'customer_plans', 'invoices', 'invoice_lines',
                         'late_after_close', 'reconciliation')
       and pg_catalog.has_table_privilege('meter_ingest', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')),
    null::text[],
    'meter_ingest: no privilege on any month close table or view');
select is(
    (select pg_catalog.array_agg(p.oid::regprocedure::text || ' by ' || r.rolname order by 1)
     from pg_catalog.pg_proc p, pg_catalog.pg_roles r
     where p.pronamespace = 'meter'::regnamespace
       and p.proname in ('billing_period', '_events_hash', '_invoice_frozen', 'plan_upsert', 'plan_price_set', 'plan_price_mirror_record',
                         'customer_subscribe', 'period_close', '_line_hash', '_line_events', '_line_hashes', '_line_figures',
                         '_invoice_drafts')
       and pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')
       and not r.rolsuper and r.oid <> p.proowner),
    null::text[],
    'no role but the owner (and superusers) may execute the month close functions (close, prices, plans, '
    'subscriptions, periods, hashes, the drafts, the freezing trigger)');
select is(
    (select pg_catalog.array_agg(p.oid::regprocedure::text || ' by ' || r.rolname order by 1)
     from pg_catalog.pg_proc p, pg_catalog.pg_roles r
     where p.pronamespace = 'meter'::regnamespace
       and p.proname in ('_period_usage', 'price_amount', '_line_usage', '_dims_match', '_dims_priced_by', '_event_in_line',
                         '_filter_label')
       and pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE')
       and not r.rolsuper and r.oid <> p.proowner),
    array['meter._dims_match(jsonb,jsonb) by meter_analyst',
          'meter._dims_priced_by(bigint,bigint,jsonb) by meter_analyst',
          'meter._event_in_line(bigint,bigint,jsonb,jsonb,timestamp with time zone) by meter_analyst',
          'meter._filter_label(jsonb,boolean) by meter_analyst',
          'meter._line_usage(bigint,bigint,timestamp with time zone,timestamp with time zone,bigint,jsonb) by meter_analyst',
          'meter._period_usage(bigint,bigint,timestamp with time zone,timestamp with time zone) by meter_analyst',
          'meter.price_amount(text,numeric,numeric,jsonb,numeric) by meter_analyst'],
    'the reconciliation''s functions (usage per line, the line rule, pricing): the owner and meter_analyst only');
select is((select pg_catalog.count(*) from pg_catalog.pg_proc p
           where p.pronamespace = 'meter'::regnamespace
             and p.proname in ('billing_period', '_events_hash', '_invoice_frozen', 'plan_upsert', 'plan_price_set', 'plan_price_mirror_record',
                               'customer_subscribe', 'period_close', '_period_usage', 'price_amount', '_line_hash', '_line_events',
                               '_line_hashes', '_invoice_drafts', '_filter_label', '_line_usage', '_line_figures', '_dims_match',
                               '_dims_priced_by', '_event_in_line')),
          20::bigint, 'the two checks above cover the twenty month close functions');

-- ---------------------------------------------------------------------------------------------
-- Behaviour as meter_ingest.
-- ---------------------------------------------------------------------------------------------
create temp table fx as
select meter.customer_upsert('tap-pv-cust') as cust,
       meter.meter_upsert('tap.pv.calls')   as m_calls,
       pg_temp.key_create('tap-pv-key', 'mk_PrivTapKey0123456789ABCDEFGHIJKLMNOPQRS') as key_id;
grant select on fx to public;

set local role meter_ingest;

select is(current_user::text, 'meter_ingest', 'now running as meter_ingest');

select is(meter.api_key_authenticate(pg_temp.key_hash('mk_PrivTapKey0123456789ABCDEFGHIJKLMNOPQRS')), (select key_id from fx),
          'meter_ingest can authenticate a key (security definer reads meter.api_keys)');

select results_eq(
    $$select ord, status, code from meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
          'customer', 'tap-pv-cust', 'meter', 'tap.pv.calls', 'idempotency_key', 'tap-pv-k1',
          'occurred_at', pg_catalog.now())))$$,
    $$values (0, 'accepted'::text, null::text)$$,
    'meter_ingest can ingest through meter.event_ingest (security definer)');

select results_eq(
    $$select ord, status from meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
          'customer', 'tap-pv-cust', 'meter', 'tap.pv.calls', 'idempotency_key', 'tap-pv-k1',
          'occurred_at', pg_catalog.now())))$$,
    $$values (0, 'duplicate'::text)$$,
    'and a retry as meter_ingest is a duplicate (it may write the redelivery audit row via the function)');

select throws_ok(
    $$insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at)
      values ((select cust from fx), (select m_calls from fx), 'tap-pv-direct', pg_catalog.now())$$,
    '42501', 'permission denied for table events',
    'meter_ingest cannot insert into meter.events directly');
select throws_ok($$select * from meter.events$$, '42501', 'permission denied for table events',
                 'meter_ingest cannot select meter.events');
select throws_ok($$update meter.events set value = 0$$, '42501', 'permission denied for table events',
                 'meter_ingest cannot update meter.events');
select throws_ok($$delete from meter.events$$, '42501', 'permission denied for table events',
                 'meter_ingest cannot delete from meter.events');
select throws_ok($$select * from meter.customers$$, '42501', 'permission denied for table customers',
                 'meter_ingest cannot select meter.customers');
select throws_ok($$insert into meter.customers (external_id) values ('tap-pv-sneaky')$$, '42501',
                 'permission denied for table customers', 'meter_ingest cannot insert into meter.customers');
select throws_ok($$select * from meter.api_keys$$, '42501', 'permission denied for table api_keys',
                 'meter_ingest cannot select meter.api_keys');
select throws_ok($$update meter.api_keys set revoked_at = null$$, '42501', 'permission denied for table api_keys',
                 'meter_ingest cannot un-revoke keys');
select throws_ok($$select pg_temp.key_create('tap-pv-sneaky', 'mk_SneakyTapKey0123456789ABCDEFGHIJKLMNOP')$$,
                 '42501', 'permission denied for function api_key_create',
                 'meter_ingest cannot create API keys');
select throws_ok($$select meter.customer_upsert('tap-pv-sneaky')$$, '42501',
                 'permission denied for function customer_upsert', 'meter_ingest cannot create customers');
select throws_ok($$select * from meter.event_daily$$, '42501', 'permission denied for view event_daily',
                 'meter_ingest cannot read the analyst views');

select results_eq(
    $$select ord, status from meter.event_cancel('[{"customer": "tap-pv-cust", "idempotency_key": "tap-pv-k1"}]')$$,
    $$values (0, 'cancelled'::text)$$,
    'meter_ingest can cancel an event through meter.event_cancel (security definer)');
select is_empty(
    $$select * from meter.usage('tap-pv-cust', 'tap.pv.calls', '2024-01-01 00:00+00', '2024-02-01 00:00+00', 'day')$$,
    'meter_ingest can read usage through meter.usage (security definer)');
select throws_ok($$select * from meter.rollup_run()$$, '42501', 'permission denied for function rollup_run',
                 'meter_ingest cannot run the rollup');
select throws_ok($$select * from meter.rollup_verify('2024-01-01 00:00+00', '2024-02-01 00:00+00')$$, '42501',
                 'permission denied for function rollup_verify', 'meter_ingest cannot run rollup_verify');
select throws_ok($$select * from meter.rollup_hourly$$, '42501', 'permission denied for table rollup_hourly',
                 'meter_ingest cannot select meter.rollup_hourly');
select throws_ok($$select * from meter.event_cancellations$$, '42501', 'permission denied for table event_cancellations',
                 'meter_ingest cannot select meter.event_cancellations');
select throws_ok($$select * from meter.rollup_lag$$, '42501', 'permission denied for view rollup_lag',
                 'meter_ingest cannot read meter.rollup_lag');
select lives_ok($$select meter.rollup_lag_seconds()$$,
                'meter_ingest can call meter.rollup_lag_seconds (security definer: it reads the events for it)');
select throws_ok($$update meter.rollup_watermark set position_id = 0$$, '42501',
                 'permission denied for table rollup_watermark', 'meter_ingest cannot move the watermark');
select throws_ok($$select meter.webhook_receive('evt_tap_pv', 'invoice.paid', pg_catalog.now(), '{}')$$, '42501',
                 'permission denied for function webhook_receive', 'meter_ingest cannot store billing webhooks');
select throws_ok($$select * from meter.invoices$$, '42501', 'permission denied for table invoices',
                 'meter_ingest cannot read invoices');
select throws_ok($$select * from meter.period_close('2025-05')$$, '42501', 'permission denied for function period_close',
                 'meter_ingest cannot close a period');

reset role;

select is(current_user::text, 'meter', 'back to the owner after RESET ROLE');
select results_eq(
    $$select idempotency_key, value from meter.events where customer_id = (select cust from fx)$$,
    $$values ('tap-pv-k1'::text, 1::numeric)$$,
    'exactly the event ingested as meter_ingest is stored');

create temp table pv_event as
select id from meter.events where customer_id = (select cust from fx) and idempotency_key = 'tap-pv-k1';
grant select on pv_event to public;

-- A closed period for the analyst to read (2025-05: no events).
select meter.plan_upsert('tap-pv-plan', 'usd');
select meter.plan_price_set('tap-pv-plan', 'tap.pv.calls', 'per_unit', 1);
select meter.customer_subscribe('tap-pv-cust', 'tap-pv-plan', '2025-01');
select outcome from meter.period_close('2025-05', 'tap-pv-cust');

-- ---------------------------------------------------------------------------------------------
-- Behaviour as meter_analyst.
-- ---------------------------------------------------------------------------------------------
set local role meter_analyst;

select results_eq(
    $$select customer, meter, events, duplicates from meter.event_daily where customer = 'tap-pv-cust'$$,
    $$values ('tap-pv-cust'::text, 'tap.pv.calls'::text, 1::bigint, 1::bigint)$$,
    'meter_analyst reads meter.event_daily');
select results_eq(
    $$select name, prefix, active from meter.api_keys_public where id = (select key_id from fx)$$,
    $$values ('tap-pv-key'::text, 'mk_PrivTapKe'::text, true)$$,
    'meter_analyst reads meter.api_keys_public');
select throws_ok($$select * from meter.api_keys$$, '42501', 'permission denied for table api_keys',
                 'meter_analyst cannot select meter.api_keys');
select throws_ok($$select * from meter.events$$, '42501', 'permission denied for table events',
                 'meter_analyst cannot select meter.events');
select throws_ok($$select * from meter.event_ingest('[]'::jsonb)$$, '42501',
                 'permission denied for function event_ingest', 'meter_analyst cannot ingest');
select throws_ok($$select meter.api_key_authenticate(pg_temp.key_hash('mk_PrivTapKey0123456789ABCDEFGHIJKLMNOPQRS'))$$, '42501',
                 'permission denied for function api_key_authenticate', 'meter_analyst cannot probe tokens');

select lives_ok($$select * from meter.rollup_hourly$$, 'meter_analyst reads meter.rollup_hourly');
select lives_ok($$select * from meter.rollup_hourly_unique$$, 'meter_analyst reads meter.rollup_hourly_unique');
select lives_ok($$select * from meter.rollup_watermark$$, 'meter_analyst reads meter.rollup_watermark');
select results_eq(
    $$select v.version, v.aggregation from meter.meter_versions v where v.meter_id = (select m_calls from fx)$$,
    $$values (1, 'count'::text)$$,
    'meter_analyst reads meter.meter_versions');
select results_eq(
    $$select c.event_id from meter.event_cancellations c where c.event_id = (select id from pv_event)$$,
    $$select id from pv_event$$,
    'meter_analyst reads meter.event_cancellations (the cancellation made as meter_ingest)');
select results_eq(
    $$select pending_cancellations >= 1, pending_events >= 1 from meter.rollup_lag$$,
    $$values (true, true)$$,
    'meter_analyst reads meter.rollup_lag (its view reads meter.events with the owner''s rights)');
select lives_ok($$select meter.rollup_lag_seconds()$$,
                'meter_analyst can call meter.rollup_lag_seconds');
select is_empty(
    $$select * from meter.usage('tap-pv-cust', null, '2024-01-01 00:00+00', '2024-02-01 00:00+00', 'month')$$,
    'meter_analyst can read usage through meter.usage');
select is_empty(
    $$select * from meter.rollup_verify('2024-01-01 00:00+00', '2024-02-01 00:00+00')$$,
    'meter_analyst can run rollup_verify (security definer: no access to raw events needed)');
select throws_ok($$select * from meter.rollup_run()$$, '42501', 'permission denied for function rollup_run',
                 'meter_analyst cannot run the rollup');
select throws_ok($$select * from meter.event_cancel('[]')$$, '42501', 'permission denied for function event_cancel',
                 'meter_analyst cannot cancel events');
select throws_ok($$select meter.meter_upsert('tap.pv.sneaky')$$, '42501', 'permission denied for function meter_upsert',
                 'meter_analyst cannot create or change meters');
select throws_ok($$delete from meter.rollup_hourly$$, '42501', 'permission denied for table rollup_hourly',
                 'meter_analyst cannot change the rollups');
select lives_ok($$select * from meter.sync_status$$,
                'meter_analyst reads meter.sync_status (its view reads customers and meters with the owner''s rights)');
select lives_ok($$select * from meter.sync_backlog$$, 'meter_analyst reads meter.sync_backlog');
select throws_ok($$select * from meter.webhook_secrets$$, '42501', 'permission denied for table webhook_secrets',
                 'meter_analyst cannot read the webhook signing secrets');
select throws_ok($$select * from meter.sync_claim('tap-pv-sneaky')$$, '42501',
                 'permission denied for function sync_claim', 'meter_analyst cannot claim outbox hours');
select throws_ok($$update meter.sync_outbox set state = 'dead'$$, '42501', 'permission denied for table sync_outbox',
                 'meter_analyst cannot change the outbox');
select results_eq(
    $$select i.period, i.total, l.kind, l.amount, p.code, pp.model, cp.effective_from, cu.minor_unit
      from meter.invoices i join meter.invoice_lines l on l.invoice_id = i.id
      join meter.plans p on p.id = i.plan_id join meter.plan_prices pp on pp.plan_id = p.id
      join meter.customer_plans cp on cp.customer_id = i.customer_id join meter.currencies cu on cu.code = i.currency
      where i.customer_id = (select cust from fx)$$,
    $$values ('2025-05'::text, 0::bigint, 'usage'::text, 0::bigint, 'tap-pv-plan'::text, 'per_unit'::text, '2025-01'::text, 2::smallint)$$,
    'meter_analyst reads invoices, their lines, plans, prices, subscriptions and currencies');
select results_eq(
    $$select period, customer, meter, rollup_quantity::numeric, expected_amount::bigint, status
      from meter.reconciliation where customer = 'tap-pv-cust'$$,
    $$values ('2025-05'::text, 'tap-pv-cust'::text, 'tap.pv.calls'::text, 0::numeric, 0::bigint, 'MATCH'::text)$$,
    'meter_analyst reads meter.reconciliation (its calls of _period_usage and price_amount run as the analyst)');
select lives_ok($$select * from meter.late_after_close$$,
                'meter_analyst reads meter.late_after_close (its view reads the events with the owner''s rights)');
select throws_ok($$select * from meter.period_close('2025-05')$$, '42501', 'permission denied for function period_close',
                 'meter_analyst cannot close a period');
select throws_ok($$select meter.plan_price_set('tap-pv-plan', 'tap.pv.calls', 'per_unit', 0)$$, '42501',
                 'permission denied for function plan_price_set', 'meter_analyst cannot price meters');
select throws_ok($$select meter.customer_subscribe('tap-pv-cust', 'tap-pv-plan', '2025-06')$$, '42501',
                 'permission denied for function customer_subscribe', 'meter_analyst cannot subscribe customers');
select throws_ok($$select * from meter.billing_period((select cust from fx), '2025-05')$$, '42501',
                 'permission denied for function billing_period', 'meter_analyst cannot call billing_period');
select throws_ok($$update meter.invoices set total = 1$$, '42501', 'permission denied for table invoices',
                 'meter_analyst cannot change invoices');

reset role;

select * from finish();
rollback;
