-- 0015_price_filters: a plan may price a meter per dimension values (issue 15: an AI API bills
-- tokens per model, gpt-4o dearer than the rest; Lago's charge filters, Orb's property prices).
--
--   plan_prices.filter        {dimension: value or [values]} the price applies to; '{}' is the
--                             meter's default price (the usage no other filter of the plan and
--                             meter takes). Key (plan, meter, filter). Filters of one plan and
--                             meter never overlap (meter.plan_price_set refuses it), so each
--                             dimension-value combination has exactly one price, or none when
--                             the plan has no default for the meter (that usage is not billed,
--                             as a meter the plan does not price).
--   invoice_lines.price_filter  the filter of the price a line was priced with ('{}': the
--                             default, or a meter priced without filters): one usage line per
--                             priced filter; adjustments per (earlier period, meter, filter).
--
-- Filter values match the rollup's dimension values (meter._dimension_values: the property's
-- text, JSON null for "none"); meter._dims_match is the one matching rule, meter._price_filter_of
-- the one assignment of a dimension-value combination to a price.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

alter table meter.plan_prices
    add column filter jsonb not null default '{}',
    drop constraint plan_prices_pkey,
    add constraint plan_prices_pkey primary key (plan_id, meter_id, filter),
    add constraint plan_prices_filter check (pg_catalog.jsonb_typeof(filter) = 'object');
comment on column meter.plan_prices.filter is
    'Dimension values this price applies to ({dimension: value or [values]}); ''{}'': the default for the rest.';

alter table meter.invoice_lines
    add column price_filter jsonb not null default '{}';
comment on column meter.invoice_lines.price_filter is
    'The filter of the plan price this line was priced with (''{}'': the meter''s default price).';

-- The price functions gain a filter argument (sql/functions/plan_price_set.sql,
-- plan_price_mirror_record.sql): the old signatures would stay behind as ambiguous overloads.
drop function if exists meter.plan_price_set(text, text, text, numeric, numeric, jsonb);
drop function if exists meter.plan_price_mirror_record(text, text, text);

-- ---------------------------------------------------------------------------------------------
-- Sync per priced filter (Billing Meters only). The engine has no dimensions: each filter's
-- usage goes to an engine Billing Meter of its own (event name: the meter's, plus
-- meter._line_suffix(filter); the default '{}' keeps the meter's own), priced by the mirror of
-- that plan price. The outbox stays one row per (customer, meter, hour), the unit of change of
-- the rollup; a claim of an hour of a meter its customer's plan prices per filter sends one meter
-- event per priced filter (sending_lines: [{filter, suffix, quantity}], repeated as is while the
-- outcome is unknown, like sending_quantity), and the engine's acknowledgement keeps them
-- (synced_lines), so the reconciliation compares each line with what the engine took for it.
-- Links (subscription items), engine invoice lines and the engine's usage figures are per line.
-- ---------------------------------------------------------------------------------------------
alter table meter.sync_outbox
    add column sending_lines jsonb,
    add column synced_lines jsonb,
    add constraint sync_outbox_sending_lines check (sending_lines is null or sending_key is not null);
comment on column meter.sync_outbox.sending_lines is
    'Meters priced per filter: the per-filter quantities of the send in flight, [{filter, suffix, quantity}].';
comment on column meter.sync_outbox.synced_lines is
    'Meters priced per filter: the per-filter quantities the engine acknowledged last.';

alter table meter.billing_links
    add column price_filter jsonb not null default '{}',
    drop constraint billing_links_pkey,
    add constraint billing_links_pkey primary key (customer_id, meter_id, price_filter);
comment on column meter.billing_links.price_filter is
    'The priced filter whose usage this subscription item bills (''{}'': the meter, or its default price).';

alter table meter.billing_invoice_lines
    add column price_filter jsonb;
comment on column meter.billing_invoice_lines.price_filter is
    'The priced filter of the line''s subscription item (meter.billing_links), with meter_id.';

alter table meter.billing_usage
    add column price_filter jsonb not null default '{}',
    drop constraint billing_usage_pkey,
    add constraint billing_usage_pkey primary key (customer_id, meter_id, period_start, price_filter);
comment on column meter.billing_usage.price_filter is 'The priced filter whose engine meter was asked (''{}'': the meter''s own).';

drop function if exists meter.sync_claim(text, integer, interval);
drop function if exists meter.billing_unlinked(integer);
drop function if exists meter.billing_link_record(bigint, bigint, text, text, text, text);
drop function if exists meter.billing_usage_targets(text);
drop function if exists meter.billing_usage_record(bigint, bigint, timestamptz, timestamptz, text, text, numeric, integer);
