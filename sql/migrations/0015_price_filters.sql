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
