-- The schema against its plan for a distributed Postgres (Citus, by customer; docs/scaling.md §7,
-- issue 20). Citus cannot be installed here, so the plan lives in this file and the schema is
-- checked against it:
--   * every table of schema meter is classified: distributed (by customer_id, colocated),
--     reference (replicated to every node) or local (on the coordinator only);
--   * a distributed table has a customer_id column, each of its primary and unique keys contains
--     customer_id, and each foreign key to another distributed table carries customer_id on both
--     sides; no reference or local table points at a distributed one;
--   * what breaks those rules today is listed below, each with what it becomes at the cut-over,
--     and must be exactly the set of violations: a new table, key or reference that breaks the
--     plan fails this test, and so does a listed gap once it is mended (take it off the list).
begin;
select plan(4);

create temp table distribution_plan (tbl text primary key, class text not null check (class in ('distributed', 'reference', 'local')));
insert into distribution_plan values
    -- per customer: events and everything derived from them
    ('events', 'distributed'), ('event_keys', 'distributed'), ('event_cancellations', 'distributed'),
    ('event_redeliveries', 'distributed'), ('rollup_hourly', 'distributed'), ('rollup_hourly_unique', 'distributed'),
    ('rollup_hourly_dims', 'distributed'), ('rollup_period', 'distributed'), ('rollup_period_dims', 'distributed'), ('rollup_ledger', 'distributed'), ('rollup_ledger_period', 'distributed'),
    ('gauge_series', 'distributed'), ('sync_outbox', 'distributed'), ('billing_usage', 'distributed'),
    ('customer_plans', 'distributed'), ('invoices', 'distributed'), ('invoice_lines', 'distributed'),
    ('billing_customers', 'distributed'), ('billing_links', 'distributed'), ('limit_firings', 'distributed'),
    ('alert_firings', 'distributed'),
    -- small, read by every node (ingest resolves customers, meters and keys on every event)
    ('customers', 'reference'), ('meters', 'reference'), ('meter_versions', 'reference'), ('plans', 'reference'),
    ('plan_prices', 'reference'), ('plan_limits', 'reference'), ('currencies', 'reference'), ('billing_prices', 'reference'),
    ('api_keys', 'reference'), ('alerts', 'reference'), ('webhook_secrets', 'reference'),
    -- the coordinator's own: ledgers, the engine's objects keyed by its ids, outgoing webhooks,
    -- archives and sign-offs (a few rows per customer and month, or none)
    ('schema_migrations', 'local'), ('schema_functions', 'local'), ('rollup_watermark', 'local'),
    ('webhook_events', 'local'), ('billing_invoices', 'local'), ('billing_invoice_lines', 'local'),
    ('webhook_endpoints', 'local'), ('webhook_messages', 'local'), ('webhook_deliveries', 'local'),
    ('event_archives', 'local'), ('period_signoffs', 'local');

-- The gaps of today's schema, and what each becomes at the cut-over to Citus.
create temp table distribution_gaps (tbl text, what text, becomes text);
insert into distribution_gaps values
    ('events', 'key events_pkey', 'PRIMARY KEY (customer_id, id, occurred_at)'),
    ('event_cancellations', 'no customer_id column', 'customer_id added (the event''s), filled from meter.events'),
    ('event_cancellations', 'key event_cancellations_pkey', 'PRIMARY KEY (customer_id, event_id)'),
    ('event_redeliveries', 'key event_redeliveries_pkey', 'PRIMARY KEY (customer_id, id)'),
    ('invoices', 'key invoices_pkey', 'PRIMARY KEY (customer_id, id)'),
    ('invoice_lines', 'no customer_id column', 'customer_id added (the invoice''s)'),
    ('invoice_lines', 'key invoice_lines_pkey', 'PRIMARY KEY (customer_id, invoice_id, line_no)'),
    ('invoice_lines', 'reference invoice_lines_invoice_id_fkey', 'FOREIGN KEY (customer_id, invoice_id) REFERENCES invoices (customer_id, id)'),
    ('billing_customers', 'key billing_customers_billing_customer_id_key', 'dropped: the engine''s id is unique per customer only (looked up through the coordinator''s webhook tables)'),
    ('billing_customers', 'key billing_customers_subscription_id_key', 'dropped, as billing_customer_id'),
    ('billing_links', 'key billing_links_subscription_item_id_key', 'dropped, as billing_customer_id');

select set_eq(
    $$select c.relname::text from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
      where n.nspname = 'meter' and c.relkind in ('r', 'p') and not c.relispartition$$,
    $$select tbl from distribution_plan$$,
    'every table of schema meter is classified distributed, reference or local, and every classified table exists');

create temp view distribution_violations as
with rel as (
    select c.oid, c.relname::text as tbl, p.class
    from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    join distribution_plan p on p.tbl = c.relname
    where n.nspname = 'meter' and c.relkind in ('r', 'p') and not c.relispartition
),
cust as (
    select r.oid, a.attnum from rel r join pg_catalog.pg_attribute a on a.attrelid = r.oid
    where a.attname = 'customer_id' and not a.attisdropped
)
select r.tbl, 'no customer_id column' as what
from rel r where r.class = 'distributed' and not exists (select 1 from cust c where c.oid = r.oid)
union all
select r.tbl, 'key ' || k.conname
from rel r join pg_catalog.pg_constraint k on k.conrelid = r.oid and k.contype in ('p', 'u')
where r.class = 'distributed'
  and not exists (select 1 from cust c where c.oid = r.oid and c.attnum = any (k.conkey))
union all
select r.tbl, 'reference ' || k.conname
from rel r join pg_catalog.pg_constraint k on k.conrelid = r.oid and k.contype = 'f'
join rel t on t.oid = k.confrelid
where t.class = 'distributed'
  and (r.class <> 'distributed'
       or not exists (select 1 from cust c where c.oid = r.oid and c.attnum = any (k.conkey))
       or not exists (select 1 from cust c where c.oid = t.oid and c.attnum = any (k.confkey)));

select set_eq(
    $$select tbl, what from distribution_violations$$,
    $$select tbl, what from distribution_gaps$$,
    'the tables that break the distribution rules are exactly the listed gaps, each with what it becomes');

select is_empty(
    $$select r.relname from pg_catalog.pg_constraint k
      join pg_catalog.pg_class r on r.oid = k.conrelid join pg_catalog.pg_class t on t.oid = k.confrelid
      join distribution_plan pr on pr.tbl = r.relname join distribution_plan pt on pt.tbl = t.relname
      where k.contype = 'f' and pr.class = 'reference' and pt.class = 'local'$$,
    'no reference table points at a coordinator-local one (it could not be replicated)');

select is_empty(
    $$select tbl from distribution_plan where class = 'distributed' and tbl not in (
          select tbl from distribution_gaps where what = 'no customer_id column')
      and not exists (select 1 from pg_catalog.pg_attribute a
                      where a.attrelid = ('meter.' || tbl)::regclass and a.attname = 'customer_id' and a.attnotnull)$$,
    'every distributed table''s customer_id (where it has one) is NOT NULL');

select * from finish();
rollback;
