-- 0010_billing_meters: a billed meter says which of the engine's APIs its hours go through
-- (issue 14). Stripe removed usage records in API version 2025-03-31.basil; usage now goes to a
-- Billing Meter as meter events, one per changed hour (an hourly pre-aggregated meter keeps the
-- newest event of each hour: the hour's absolute total, as action=set did).
--
--   engine_api   usage_records (the legacy API, for accounts pinned before basil) or meter_events
--   event_name   the engine meter's event_name (meter_events only)
--   value_scale  meter events carry whole numbers: an hour's total is sent times 10^value_scale
--                (e.g. 3 for GB with 3 decimals: milli-GB), and the engine price is per that unit
--
-- Existing rows keep the legacy API. Forward-only, like every migration.

set local client_min_messages = warning;

alter table meter.billing_prices
    add column engine_api text not null default 'usage_records',
    add column event_name text,
    add column value_scale smallint not null default 0,
    add constraint billing_prices_engine_api check (engine_api in ('usage_records', 'meter_events')),
    add constraint billing_prices_event_name check (
        (engine_api = 'meter_events') = (event_name is not null)
        and (event_name is null or pg_catalog.length(event_name) between 1 and 100)),
    add constraint billing_prices_value_scale check (value_scale between 0 and 12);
comment on column meter.billing_prices.engine_api is
    'usage_records (legacy, before Stripe API 2025-03-31.basil) or meter_events (Billing Meters).';
comment on column meter.billing_prices.event_name is
    'The engine Billing Meter''s event_name (meter_events only).';
comment on column meter.billing_prices.value_scale is
    'Meter events carry whole numbers: an hour''s total is sent times 10^value_scale.';

-- billing_price_set gains the engine API (sql/functions/billing_price_set.sql).
drop function if exists meter.billing_price_set(text, text, timestamptz);
