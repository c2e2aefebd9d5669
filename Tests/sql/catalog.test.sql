-- The schema as `meterctl migrate` leaves it: ledger tables and their content, the tables, views
-- and types of 0001_init, 0002_rollups, 0003_billing_sync and 0004_month_close (with its currencies
-- and the triggers freezing invoices), and the function set with its hardening (search_path
-- pinned on every function, no other setting than the documented ones, SECURITY DEFINER only
-- where documented).
-- Functions that belong to an extension (e.g. pgTAP, if it was installed into schema meter) are
-- not the project's and are left out of the function checks.
begin;
select plan(58);

-- ---------------------------------------------------------------------------------------------
-- Migration ledger.
-- ---------------------------------------------------------------------------------------------
select has_table('meter', 'schema_migrations', 'ledger meter.schema_migrations exists');
select has_table('meter', 'schema_functions', 'ledger meter.schema_functions exists');
select col_is_pk('meter', 'schema_migrations', 'version', 'schema_migrations is keyed by version');
select col_is_pk('meter', 'schema_functions', 'name', 'schema_functions is keyed by file name');

select results_eq(
    $$select version, name from meter.schema_migrations order by version$$,
    $$values (1, '0001_init.sql'::text), (2, '0002_rollups.sql'), (3, '0003_billing_sync.sql'), (4, '0004_month_close.sql'),
             (5, '0005_function_names.sql'), (6, '0006_invoice_status_ranks.sql'), (7, '0007_api_key_hashes.sql'),
             (8, '0008_api_key_scopes.sql'), (9, '0009_retention.sql'), (10, '0010_billing_meters.sql'),
             (11, '0011_billing_usage.sql'), (12, '0012_meter_dimensions.sql'),
             (13, '0013_gauge_latest.sql'), (14, '0014_gauge_time_weighted.sql'),
             (15, '0015_price_filters.sql'), (16, '0016_usage_limits.sql'),
             (17, '0017_outgoing_webhooks.sql'), (18, '0018_alerts.sql'), (19, '0019_rollup_period.sql'), (20, '0020_line_figures.sql'),
             (21, '0021_events_partitioned.sql'), (22, '0022_reconciliation_lookups.sql'),
             (23, '0023_rollup_ledger.sql'), (24, '0024_rollup_ledger_period.sql'),
             (25, '0025_rollup_shards.sql')$$,
    'migrations 1 to 25 are recorded once each, and no other');

select is_empty(
    $$select version from meter.schema_migrations where checksum !~ '^[0-9a-f]{64}$' or execution_ms < 0$$,
    'every recorded migration has a SHA-256 hex checksum and a non-negative duration');

select set_eq(
    $$select name from meter.schema_functions$$,
    $$values ('functions/_alerts_evaluate.sql'::text), ('functions/_event_digest.sql'), ('functions/events_partitions_ensure.sql'), ('functions/period_signoff.sql'), ('functions/events_archive_check.sql'), ('functions/events_archive.sql'), ('functions/events_archive_sample.sql'), ('functions/events_archive_digests.sql'), ('views/events_partition_runway.sql'), ('functions/_dimension_object.sql'), ('functions/_dimension_values.sql'), ('functions/_dims_match.sql'), ('functions/_dims_priced_by.sql'),
             ('functions/_event_in_line.sql'), ('functions/_events_hash.sql'), ('functions/_filter_label.sql'), ('functions/_filter_normalize.sql'),
             ('functions/_hour_lines.sql'), ('functions/_is_billing_period.sql'), ('functions/_line_events.sql'), ('functions/_line_figures.sql'), ('functions/_line_hashes.sql'), ('functions/_line_ledger.sql'), ('functions/_invoice_drafts.sql'), ('functions/_line_suffix.sql'), ('functions/_line_hash.sql'), ('functions/_line_usage.sql'), ('functions/_gauge_dims_hours.sql'), ('functions/_gauge_hours.sql'), ('functions/_outbox_requeue.sql'), ('functions/_invoice_draft.sql'), ('functions/_late_after_close_emit.sql'), ('functions/_invoice_frozen.sql'),
             ('functions/_period_of.sql'), ('functions/_period_usage.sql'), ('functions/_refuse_delete.sql'), ('functions/_rollup_period_from_hours.sql'), ('functions/_rollup_fold.sql'), ('functions/_rollup_ledger_add.sql'), ('functions/_redelivery_customer.sql'), ('functions/_rollup_ledger_period_from_hours.sql'), ('functions/_webhook_emit.sql'), ('functions/_webhook_emit_all.sql'),
             ('functions/_rollup_pending.sql'), ('functions/_unfolded.sql'), ('functions/api_key_authenticate.sql'), ('functions/api_key_authorize.sql'),
             ('functions/api_key_create.sql'), ('functions/alert_set.sql'), ('functions/api_key_revoke.sql'),
             ('functions/billing_link_record.sql'), ('functions/billing_period.sql'),
             ('functions/billing_price_set.sql'), ('functions/billing_unlinked.sql'),
             ('functions/billing_usage_record.sql'), ('functions/billing_usage_targets.sql'),
             ('functions/customer_subscribe.sql'), ('functions/customer_upsert.sql'),
             ('functions/event_cancel.sql'), ('functions/event_ingest.sql'), ('functions/event_ingest_arrays.sql'), ('functions/invoice_preview.sql'), ('functions/limit_check.sql'), ('functions/plan_limit_set.sql'), ('functions/meter_upsert.sql'),
             ('functions/period_close.sql'), ('functions/plan_price_mirror_record.sql'),
             ('functions/plan_price_set.sql'), ('functions/plan_upsert.sql'), ('functions/price_amount.sql'), ('functions/reconciliation_verify.sql'),
             ('functions/retention_prune.sql'), ('functions/rollup_lag_seconds.sql'), ('functions/rollup_rebase.sql'),
             ('functions/rollup_period_rebuild.sql'), ('functions/rollup_period_verify.sql'), ('functions/rollup_ledger_period_verify.sql'), ('functions/rollup_run.sql'), ('functions/rollup_shards_set.sql'), ('functions/rollup_verify.sql'), ('functions/sync_claim.sql'), ('functions/sync_refused.sql'),
             ('functions/sync_failed.sql'), ('functions/sync_retry.sql'), ('functions/sync_succeeded.sql'),
             ('functions/usage.sql'), ('functions/webhook_claim.sql'), ('functions/webhook_endpoint_set.sql'), ('functions/webhook_process.sql'),
             ('functions/webhook_redrive.sql'), ('functions/webhook_report.sql'), ('functions/webhook_receive.sql'),
             ('views/api_keys_public.sql'), ('views/event_daily.sql'), ('views/late_after_close.sql'), ('views/limit_usage.sql'),
             ('views/reconciliation.sql'), ('views/rollup_lag.sql'), ('views/sync_backlog.sql'),
             ('views/sync_status.sql')$$,
    'the ledger names every sql/functions and sql/views file, by path, and nothing else');

select is_empty(
    $$select name from meter.schema_functions where checksum !~ '^[0-9a-f]{64}$'$$,
    'every recorded function file has a SHA-256 hex checksum');

-- ---------------------------------------------------------------------------------------------
-- Tables, views, types.
-- ---------------------------------------------------------------------------------------------
select set_eq(
    $$select c.relname::text from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'meter' and c.relkind in ('r', 'p') and not c.relispartition$$,
    array['schema_migrations', 'schema_functions', 'customers', 'meters', 'api_keys', 'events',
          'event_redeliveries', 'meter_versions', 'event_cancellations', 'rollup_hourly',
          'rollup_hourly_unique', 'rollup_watermark', 'billing_prices', 'billing_customers',
          'billing_links', 'sync_outbox', 'webhook_secrets', 'webhook_events', 'billing_invoices',
          'billing_invoice_lines', 'currencies', 'plans', 'plan_prices', 'customer_plans', 'invoices',
          'invoice_lines', 'billing_usage', 'rollup_hourly_dims', 'gauge_series', 'plan_limits',
          'webhook_endpoints', 'webhook_messages', 'webhook_deliveries', 'alerts', 'alert_firings', 'limit_firings', 'rollup_period', 'rollup_period_dims',
          'event_keys', 'event_archives', 'period_signoffs', 'rollup_ledger', 'rollup_ledger_period'],
    'schema meter holds exactly the ledger, the 0001 tables, the 0002 tables, the 0003 tables, the 0004 tables 0011''s billing_usage, 0012''s rollup_hourly_dims, 0014''s gauge_series, 0016''s plan_limits, 0017''s outgoing webhook tables, 0018''s alerts, 0019''s period totals, 0021''s event keys, archives and sign-offs 0023''s rollup ledger and 0024''s its period rows (partitions of meter.events aside)');

select is_empty(
    $$select c.relname from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
      where i.inhparent = 'meter.events'::regclass
        and (c.relname !~ '^events_[0-9]{4}_[0-9]{2}$' or pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT')$$,
    'every partition of meter.events is a month named events_YYYY_MM; there is no default partition');

select col_is_pk('meter', 'customers', 'id', 'customers.id is the primary key');
select col_is_pk('meter', 'meters', 'id', 'meters.id is the primary key');
select col_is_pk('meter', 'api_keys', 'id', 'api_keys.id is the primary key');
select col_is_pk('meter', 'events', array['id', 'occurred_at']::name[], 'events'' primary key is (id, occurred_at) (a partitioned table''s keys hold its partition key)');
select col_is_pk('meter', 'event_redeliveries', 'id', 'event_redeliveries.id is the primary key');
select col_is_unique('meter', 'customers', 'external_id', 'customers.external_id is unique');
select col_is_unique('meter', 'meters', 'code', 'meters.code is unique');
select col_is_unique('meter', 'api_keys', 'key_hash', 'api_keys.key_hash is unique');
select col_is_pk('meter', 'meter_versions', array['meter_id', 'version']::name[],
                 'meter_versions is keyed by (meter_id, version)');
select col_is_pk('meter', 'event_cancellations', 'event_id',
                 'event_cancellations is keyed by event_id (one cancellation per event)');
select col_is_pk('meter', 'rollup_hourly', array['customer_id', 'meter_id', 'hour']::name[],
                 'rollup_hourly is keyed by (customer_id, meter_id, hour)');
select col_is_pk('meter', 'rollup_hourly_unique', array['customer_id', 'meter_id', 'hour', 'value_hash']::name[],
                 'rollup_hourly_unique is keyed by (customer_id, meter_id, hour, value_hash): a value may be too long for a B-tree key');
select results_eq(
    $$select name from meter.rollup_watermark$$, $$values ('events'::text)$$,
    'rollup_watermark holds exactly one row, named events');
select col_is_pk('meter', 'billing_prices', 'meter_id', 'billing_prices is keyed by meter_id (one price per meter)');
select col_is_pk('meter', 'billing_usage', array['customer_id', 'meter_id', 'period_start', 'price_filter']::name[],
                 'billing_usage is keyed by (customer_id, meter_id, period_start, price_filter): one engine figure per period and line');
select col_is_pk('meter', 'billing_links', array['customer_id', 'meter_id', 'price_filter']::name[],
                 'billing_links is keyed by (customer_id, meter_id, price_filter) (one subscription item per line)');
select col_is_unique('meter', 'billing_links', 'subscription_item_id',
                     'billing_links.subscription_item_id is unique (an item bills one pair)');
select col_is_pk('meter', 'sync_outbox', array['customer_id', 'meter_id', 'hour']::name[],
                 'sync_outbox is keyed by (customer_id, meter_id, hour), like rollup_hourly');
select col_is_pk('meter', 'webhook_events', 'event_id', 'webhook_events is keyed by event_id (stored once)');
select col_is_pk('meter', 'billing_invoice_lines', array['invoice_id', 'line_id']::name[],
                 'billing_invoice_lines is keyed by (invoice_id, line_id)');
select has_sequence('meter', 'sync_claim_token', 'sequence meter.sync_claim_token exists');
select col_is_pk('meter', 'currencies', 'code', 'currencies is keyed by code');
select results_eq(
    $$select pg_catalog.count(*)::integer, pg_catalog.count(*) filter (where minor_unit = 2)::integer,
             pg_catalog.string_agg(code, ',' order by code) filter (where minor_unit = 0),
             pg_catalog.string_agg(code, ',' order by code) filter (where minor_unit = 3)
      from meter.currencies$$,
    $$values (29, 19, 'clp,isk,jpy,krw,vnd'::text, 'bhd,jod,kwd,omr,tnd'::text)$$,
    'currencies: 29 ISO 4217 codes, minor unit 2 but for jpy, krw, clp, isk, vnd (0) and kwd, bhd, jod, omr, tnd (3)');
select col_is_pk('meter', 'plans', 'id', 'plans.id is the primary key');
select col_is_unique('meter', 'plans', 'code', 'plans.code is unique');
select col_is_pk('meter', 'plan_prices', array['plan_id', 'meter_id', 'filter']::name[],
                 'plan_prices is keyed by (plan_id, meter_id, filter) (one price per meter of a plan, or per filter of its dimensions)');
select col_is_pk('meter', 'customer_plans', array['customer_id', 'effective_from']::name[],
                 'customer_plans is keyed by (customer_id, effective_from)');
select col_is_pk('meter', 'invoices', 'id', 'invoices.id is the primary key');
select col_is_unique('meter', 'invoices', array['customer_id', 'period_start']::name[],
                     'invoices are unique per (customer_id, period_start): one invoice per customer and period');
select col_is_pk('meter', 'invoice_lines', array['invoice_id', 'line_no']::name[],
                 'invoice_lines is keyed by (invoice_id, line_no)');
select has_trigger('meter', 'invoices', 'invoices_frozen', 'trigger invoices_frozen is on meter.invoices');
select has_trigger('meter', 'invoice_lines', 'invoice_lines_frozen', 'trigger invoice_lines_frozen is on meter.invoice_lines');
select results_eq(
    $$select t.tgname::text collate "default", p.proname::text collate "default", t.tgenabled::text,
             (t.tgtype & 2) <> 0, (t.tgtype & 1) <> 0, (t.tgtype & 8) <> 0, (t.tgtype & 16) <> 0, (t.tgtype & 4) <> 0
      from pg_catalog.pg_trigger t join pg_catalog.pg_proc p on p.oid = t.tgfoid
      where t.tgrelid in ('meter.invoices'::regclass, 'meter.invoice_lines'::regclass) and not t.tgisinternal
      order by t.tgname$$,
    $$values ('invoice_lines_added'::text, '_invoice_frozen'::text, 'O'::text, false, false, false, false, true),
             ('invoice_lines_frozen', '_invoice_frozen', 'O', true, true, true, true, false),
             ('invoice_lines_no_truncate', '_invoice_frozen', 'O', true, false, false, false, false),
             ('invoices_frozen', '_invoice_frozen', 'O', true, true, true, true, false),
             ('invoices_no_truncate', '_invoice_frozen', 'O', true, false, false, false, false)$$,
    'all run meter._invoice_frozen, enabled: lines BEFORE UPDATE, DELETE per row and AFTER INSERT per statement (the lines added); '
    'invoices BEFORE UPDATE, DELETE; both BEFORE TRUNCATE (per statement)');
select columns_are('meter', 'meters', array['id', 'code', 'name', 'unit', 'created_at']::name[],
                   'meters no longer holds a definition (aggregation, unique_property moved to meter_versions)');
select col_not_null('meter', 'events', 'xid', 'events.xid (the inserting transaction) is NOT NULL');

select views_are('meter', array['event_daily', 'api_keys_public', 'rollup_lag', 'meter_version_ranges',
                                'sync_status', 'sync_backlog', 'late_after_close', 'reconciliation', 'limit_usage',
                                'events_partition_runway']::name[],
                 'schema meter has exactly the views event_daily, api_keys_public, rollup_lag, meter_version_ranges, '
                 'sync_status, sync_backlog, late_after_close, reconciliation, limit_usage and events_partition_runway');

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

select has_composite('meter', 'cancel_verdict', 'composite type meter.cancel_verdict exists');
select results_eq(
    $$select a.attname::text collate "default", pg_catalog.format_type(a.atttypid, a.atttypmod)
      from pg_catalog.pg_attribute a
      where a.attrelid = (select typrelid from pg_catalog.pg_type
                          where oid = 'meter.cancel_verdict'::regtype)
        and a.attnum > 0 and not a.attisdropped
      order by a.attnum$$,
    $$values ('ord', 'integer'), ('status', 'text'), ('event_id', 'bigint'),
             ('code', 'text'), ('field', 'text'), ('reason', 'text')$$,
    'cancel_verdict is (ord integer, status text, event_id bigint, code text, field text, reason text)');

select has_composite('meter', 'rollup_result', 'composite type meter.rollup_result exists');
select results_eq(
    $$select a.attname::text collate "default", pg_catalog.format_type(a.atttypid, a.atttypmod)
      from pg_catalog.pg_attribute a
      where a.attrelid = (select typrelid from pg_catalog.pg_type
                          where oid = 'meter.rollup_result'::regtype)
        and a.attnum > 0 and not a.attisdropped
      order by a.attnum$$,
    $$values ('ran', 'boolean'), ('events_folded', 'bigint'), ('cancellations_folded', 'bigint'),
             ('hours_touched', 'bigint'), ('position_xid', 'xid8'), ('position_id', 'bigint'),
             ('horizon_xid', 'xid8'), ('more_pending', 'boolean'), ('duration_ms', 'numeric')$$,
    'rollup_result has the documented fields, in order');

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
    $$values ('_alerts_evaluate(p_customers bigint[], p_meters bigint[], p_hours timestamp with time zone[])'),
             ('_dimension_object(p_dimensions text[], p_values text[])'),
             ('_dimension_values(p_properties jsonb, p_dimensions text[])'),
             ('_dims_match(p_dims jsonb, p_filter jsonb)'),
             ('_dims_priced_by(p_plan_id bigint, p_meter_id bigint, p_dims jsonb)'),
             ('_event_digest(p_meter_id bigint, p_occurred_at timestamp with time zone, p_value numeric, p_properties jsonb)'),
             ('_event_in_line(p_plan_id bigint, p_meter_id bigint, p_filter jsonb, p_properties jsonb, p_occurred_at timestamp with time zone)'),
             ('_events_hash(p_customer_id bigint, p_meter_id bigint, p_from timestamp with time zone, p_to timestamp with time zone)'),
             ('_filter_label(p_filter jsonb, p_has_filters boolean)'),
             ('_filter_normalize(p_meter_id bigint, p_filter jsonb)'),
             ('_gauge_dims_hours(p_customer_id bigint, p_meter_id bigint, p_from timestamp with time zone, p_to timestamp with time zone, p_end_xid xid8, p_end_id bigint)'),
             ('_gauge_hours(p_customer_id bigint, p_meter_id bigint, p_from timestamp with time zone, p_to timestamp with time zone, p_end_xid xid8, p_end_id bigint)'),
             ('_hour_lines(p_customer_id bigint, p_meter_id bigint, p_hour timestamp with time zone)'),
             ('_invoice_draft(p_customer_id bigint, p_plan_id bigint, p_start timestamp with time zone, p_end timestamp with time zone, p_with_hashes boolean)'),
             ('_invoice_drafts(p_customer_ids bigint[], p_plan_ids bigint[], p_starts timestamp with time zone[], p_ends timestamp with time zone[], p_with_hashes boolean)'),
             ('_invoice_frozen()'),
             ('_is_billing_period(p_timezone text, p_from timestamp with time zone, p_to timestamp with time zone)'),
             ('_late_after_close_emit(p_customers bigint[], p_meters bigint[], p_hours timestamp with time zone[], p_run_key text)'),
             ('_line_events(p_customer_id bigint, p_meter_id bigint, p_from timestamp with time zone, p_to timestamp with time zone, p_plan_id bigint, p_filter jsonb)'),
             ('_line_figures(p_customer_ids bigint[], p_meter_ids bigint[], p_from timestamp with time zone[], p_to timestamp with time zone[], p_plan_ids bigint[], p_filters jsonb[])'),
             ('_line_hash(p_customer_id bigint, p_meter_id bigint, p_from timestamp with time zone, p_to timestamp with time zone, p_plan_id bigint, p_filter jsonb)'),
             ('_line_hashes(p_customer_ids bigint[], p_meter_ids bigint[], p_from timestamp with time zone[], p_to timestamp with time zone[], p_plan_ids bigint[], p_filters jsonb[])'),
             ('_line_ledger(p_customer_id bigint, p_meter_id bigint, p_from timestamp with time zone, p_to timestamp with time zone, p_plan_id bigint, p_filter jsonb)'),
             ('_line_suffix(p_filter jsonb)'),
             ('_line_usage(p_customer_id bigint, p_meter_id bigint, p_from timestamp with time zone, p_to timestamp with time zone, p_plan_id bigint, p_filter jsonb)'),
             ('_outbox_requeue(p_customers bigint[], p_meters bigint[], p_hours timestamp with time zone[], p_revisions bigint[])'),
             ('_period_of(p_timezone text, p_at timestamp with time zone)'),
             ('_period_usage(p_customer_id bigint, p_meter_id bigint, p_from timestamp with time zone, p_to timestamp with time zone)'),
             ('_redelivery_customer()'), ('_refuse_delete()'),
             ('_rollup_fold(p_max_events integer, p_shard integer, OUT result rollup_result, OUT outbox_customers bigint[], OUT outbox_meters bigint[], OUT outbox_hours timestamp with time zone[], OUT outbox_revisions bigint[])'),
             ('_rollup_ledger_add(p_customers bigint[], p_meters bigint[], p_hours timestamp with time zone[], p_dims_hashes bytea[], p_dims jsonb[], p_events bigint[], p_cancelled bigint[], p_duplicates bigint[], p_late bigint[], p_value_in numeric[], p_value_out numeric[], p_key_checksums numeric[])'),
             ('_rollup_ledger_period_from_hours(p_customer_id bigint)'),
             ('_rollup_pending(OUT events bigint, OUT waiting bigint)'),
             ('_rollup_period_from_hours(p_customer_id bigint)'),
             ('_unfolded()'),
             ('_webhook_emit(p_type text, p_key text, p_payload jsonb)'),
             ('_webhook_emit_all(p_type text, p_keys text[], p_payloads jsonb[])'),
             ('alert_set(p_customer text, p_plan text, p_meter text, p_kind text, p_threshold numeric)'),
             ('api_key_authenticate(p_key_hash bytea)'),
             ('api_key_authorize(p_key_hash bytea, p_scope text, p_customer text)'),
             ('api_key_create(p_name text, p_prefix text, p_key_hash bytea, p_scopes text[], p_customers text[])'),
             ('api_key_revoke(p_key text)'),
             ('billing_link_record(p_customer_id bigint, p_meter_id bigint, p_billing_customer_id text, p_subscription_id text, p_subscription_item_id text, p_price_id text, p_price_filter jsonb)'),
             ('billing_period(p_customer_id bigint, p_period text)'),
             ('billing_price_set(p_meter text, p_price_id text, p_since timestamp with time zone, p_event_name text, p_value_scale integer)'),
             ('billing_unlinked(p_limit integer)'),
             ('billing_usage_record(p_customer_id bigint, p_meter_id bigint, p_period_start timestamp with time zone, p_period_end timestamp with time zone, p_engine_api text, p_engine_object text, p_engine_value numeric, p_value_scale integer, p_price_filter jsonb)'),
             ('billing_usage_targets(p_period text)'),
             ('customer_subscribe(p_customer text, p_plan text, p_from text)'),
             ('customer_upsert(p_external_id text, p_name text, p_billing_timezone text)'),
             ('event_cancel(p_cancellations jsonb, p_api_key_hash bytea)'),
             ('event_ingest(p_events jsonb, p_max_future interval, p_max_past interval, p_api_key_hash bytea)'),
             ('event_ingest_arrays(p_customers text[], p_meters text[], p_keys text[], p_occurred_at timestamp with time zone[], p_values numeric[], p_properties jsonb[], p_max_future interval, p_max_past interval, p_api_key_hash bytea)'),
             ('events_archive(p_month text, p_file text, p_sha256 text, p_events bigint, p_hashes_checked integer, p_late_window interval)'),
             ('events_archive_check(p_month text, p_late_window interval)'),
             ('events_archive_digests(p_month text)'),
             ('events_archive_sample(p_month text, p_sample integer)'),
             ('events_partitions_ensure(p_from timestamp with time zone, p_through timestamp with time zone)'),
             ('invoice_preview(p_customer text, p_period text)'),
             ('limit_check(p_customer text, p_meter text, p_dimensions jsonb, p_quantity numeric)'),
             ('meter_upsert(p_code text, p_aggregation text, p_unique_property text, p_name text, p_unit text, p_effective_from timestamp with time zone, p_dimensions text[])'),
             ('period_close(p_period text, p_customer text, p_grace interval, p_customers text[])'),
             ('period_signoff(p_period text, p_signed_by text, p_note text, p_report_sha256 text)'),
             ('plan_limit_set(p_plan text, p_meter text, p_quantity numeric, p_filter jsonb)'),
             ('plan_price_mirror_record(p_plan text, p_meter text, p_engine_price_id text, p_filter jsonb)'),
             ('plan_price_set(p_plan text, p_meter text, p_model text, p_unit_amount numeric, p_package_size numeric, p_tiers jsonb, p_filter jsonb)'),
             ('plan_upsert(p_code text, p_currency text, p_name text)'),
             ('price_amount(p_model text, p_unit_amount numeric, p_package_size numeric, p_tiers jsonb, p_quantity numeric)'),
             ('reconciliation_verify(p_period text)'),
             ('retention_prune(p_conflict_payload_keep interval, p_webhook_keep interval, p_max_rows integer)'),
             ('rollup_lag_seconds()'),
             ('rollup_ledger_period_verify(p_customer_id bigint)'),
             ('rollup_period_rebuild(p_customer_id bigint)'), ('rollup_period_verify(p_customer_id bigint)'),
             ('rollup_rebase()'),
             ('rollup_run(p_max_events integer, p_shard integer)'),
             ('rollup_shards_set(p_shard_count integer)'),
             ('rollup_verify(p_from timestamp with time zone, p_to timestamp with time zone)'),
             ('sync_claim(p_worker text, p_limit integer, p_lease interval)'),
             ('sync_failed(p_customer_id bigint, p_meter_id bigint, p_hour timestamp with time zone, p_claim_token bigint, p_error text, p_definitive boolean, p_max_attempts integer, p_base interval, p_cap interval, p_give_up_after interval)'),
             ('sync_refused(p_event_id text, p_event jsonb)'),
             ('sync_retry(p_customer text, p_meter text)'),
             ('sync_succeeded(p_customer_id bigint, p_meter_id bigint, p_hour timestamp with time zone, p_claim_token bigint)'),
             ('usage(p_customer text, p_meter text, p_from timestamp with time zone, p_to timestamp with time zone, p_granularity text, p_group_by text[], p_filter jsonb)'),
             ('webhook_claim(p_worker text, p_limit integer, p_lease interval)'),
             ('webhook_endpoint_set(p_id bigint, p_url text, p_event_types text[], p_secret text, p_enabled boolean)'),
             ('webhook_process(p_limit integer)'),
             ('webhook_receive(p_event_id text, p_type text, p_created timestamp with time zone, p_payload jsonb)'),
             ('webhook_redrive(p_endpoint_id bigint)'),
             ('webhook_report(p_message_id text, p_endpoint_id bigint, p_claim_token bigint, p_status integer, p_error text, p_give_up_after interval, p_base interval, p_cap interval)')$$,
    'schema meter has exactly the eighty-six documented functions (no leftover five-argument meter_upsert)');

select is_empty(
    $$select signature from own_functions
      where not exists (select 1 from pg_catalog.unnest(coalesce(proconfig, '{}')) c where c like 'search_path=%')$$,
    'every function in schema meter sets search_path in proconfig');

-- Functions may carry other settings besides search_path (rollup_run, rollup_verify, usage,
-- sync_claim, webhook_process and period_close pin their time zone, both rollup functions jit and work_mem, rollup_run enable_sort, rollup_run and
-- _rollup_pending plan_cache_mode): the
-- search_path entry must be there all the same, exactly once, and every other entry must be one of
-- the documented ones.
select is_empty(
    $$select signature from own_functions
      where not ('search_path=pg_catalog, pg_temp' = any (coalesce(proconfig, '{}')))
         or (select pg_catalog.count(*) from pg_catalog.unnest(coalesce(proconfig, '{}')) c
             where c like 'search_path=%') <> 1$$,
    'every function pins search_path to exactly pg_catalog, pg_temp (pg_temp last, no public), once');

select results_eq(
    $$select proname, c collate "default"
      from own_functions, pg_catalog.unnest(proconfig) c
      where c not like 'search_path=%'
      order by proname, c collate "C"$$,
    $$values ('_alerts_evaluate'::text, 'TimeZone=UTC'::text), ('_gauge_dims_hours', 'TimeZone=UTC'), ('_gauge_hours', 'TimeZone=UTC'), ('_hour_lines', 'TimeZone=UTC'), ('_invoice_draft', 'TimeZone=UTC'), ('_invoice_drafts', 'TimeZone=UTC'), ('_invoice_drafts', 'jit=off'), ('_invoice_drafts', 'plan_cache_mode=force_generic_plan'), ('_late_after_close_emit', 'TimeZone=UTC'), ('_line_figures', 'jit=off'), ('_line_figures', 'plan_cache_mode=force_generic_plan'), ('_line_hashes', 'jit=off'),
             ('_rollup_fold', 'TimeZone=UTC'), ('_rollup_fold', 'enable_sort=off'),
             ('_rollup_fold', 'jit=off'), ('_rollup_fold', 'plan_cache_mode=force_custom_plan'),
             ('_rollup_fold', 'work_mem=256MB'),
             ('_rollup_pending', 'plan_cache_mode=force_custom_plan'),
             ('_unfolded', 'plan_cache_mode=force_custom_plan'),
             ('events_archive', 'TimeZone=UTC'), ('events_archive', 'lock_timeout=10s'), ('events_archive_check', 'TimeZone=UTC'),
             ('events_archive_sample', 'TimeZone=UTC'),
             ('events_partitions_ensure', 'TimeZone=UTC'), ('events_partitions_ensure', 'lock_timeout=2s'),
             ('invoice_preview', 'TimeZone=UTC'),
             ('limit_check', 'TimeZone=UTC'), ('limit_check', 'jit=off'), ('limit_check', 'plan_cache_mode=force_generic_plan'),
             ('period_close', 'TimeZone=UTC'), ('period_close', 'jit=off'),
             ('reconciliation_verify', 'TimeZone=UTC'), ('reconciliation_verify', 'jit=off'), ('reconciliation_verify', 'work_mem=256MB'),
             ('rollup_lag_seconds', 'plan_cache_mode=force_custom_plan'),
             ('rollup_ledger_period_verify', 'TimeZone=UTC'),
             ('rollup_period_rebuild', 'TimeZone=UTC'), ('rollup_period_verify', 'TimeZone=UTC'),
             ('rollup_verify', 'TimeZone=UTC'), ('rollup_verify', 'jit=off'), ('rollup_verify', 'work_mem=256MB'),
             ('sync_claim', 'TimeZone=UTC'),
             ('usage', 'TimeZone=UTC'),
             ('webhook_process', 'TimeZone=UTC')$$,
    'the only other settings: TimeZone=UTC on the archive functions and events_partitions_ensure, lock_timeout on events_archive (10s) and events_partitions_ensure (2s), TimeZone=UTC on _alerts_evaluate, _gauge_hours, _gauge_dims_hours, _hour_lines, _invoice_draft, _invoice_drafts, _late_after_close_emit, invoice_preview, reconciliation_verify, rollup_ledger_period_verify, rollup_period_rebuild, rollup_period_verify, _rollup_fold, rollup_verify, usage, sync_claim, '
    'webhook_process and period_close (UTC hours and timestamps), '
    'jit and work_mem on _rollup_fold (rollup_run''s fold) and rollup_verify, jit and work_mem on reconciliation_verify, jit and generic plans on limit_check, jit on the set-based close '
    '(period_close, _invoice_drafts, _line_figures, _line_hashes), generic plans on _line_figures and _invoice_drafts, enable_sort on _rollup_fold, custom plans '
    'for _rollup_fold, rollup_lag_seconds, _rollup_pending and _unfolded');

select results_eq(
    $$select proname from own_functions where prosecdef order by proname$$,
    $$values ('_gauge_dims_hours'::text), ('_gauge_hours'), ('_line_ledger'), ('_line_usage'), ('_rollup_pending'), ('_unfolded'), ('api_key_authenticate'), ('api_key_authorize'), ('event_cancel'), ('event_ingest_arrays'),
             ('invoice_preview'), ('limit_check'), ('reconciliation_verify'), ('rollup_lag_seconds'), ('rollup_ledger_period_verify'), ('rollup_period_verify'), ('rollup_verify'), ('usage')$$,
    'only _gauge_hours and _gauge_dims_hours (the reconciliation''s raw integrals), _line_ledger and _line_usage (its per-line figures: they read the customer''s billing timezone), _rollup_pending, _unfolded (the reconciliation''s rows not folded yet), api_key_authenticate, api_key_authorize, event_cancel, event_ingest_arrays (not event_ingest, its JSON form), invoice_preview, limit_check, reconciliation_verify (raw events, for analysts), rollup_lag_seconds, '
    'rollup_ledger_period_verify, rollup_period_verify, rollup_verify and usage are SECURITY DEFINER');

select is_empty(
    $$select signature from own_functions f
      where pg_catalog.has_function_privilege('public', f.oid, 'EXECUTE')$$,
    'no function in schema meter is executable by PUBLIC');

select * from finish();
rollback;
