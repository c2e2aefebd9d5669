-- 0011_billing_usage: the billing engine's own figure of each closed period's usage (issue 14).
--
-- The reconciliation's "synced to engine" column was the outbox's acknowledged totals: what the
-- engine answered 2xx to, not what it holds. A CFO signs the engine's figure, so before a close
-- (EngineAlignment, `meterctl close --billing-api-base ...`, `meterctl reconcile --billing-api-base
-- ...`) meter asks the engine for every billed (customer, meter) of the period:
--
--   meter_events     GET /v1/billing/meters/{meter}/event_summaries?customer&start_time&end_time:
--                    the meter's aggregated value over the period (an hourly pre-aggregated sum
--                    meter: Σ of each hour's newest event; a max meter: its last running maximum),
--                    in engine units: divided by 10^value_scale here
--   usage_records    GET /v1/subscription_items/{si}/usage_record_summaries: the total_usage of the
--                    summary whose period starts at ours (the legacy API)
--
-- One row per (customer, meter, period start), replaced by each fetch (fetched_at says when).
-- Written by meter.billing_usage_record(); read by meter.reconciliation.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

create table meter.billing_usage (
    customer_id    bigint not null references meter.customers (id),
    meter_id       bigint not null references meter.meters (id),
    period_start   timestamptz not null,
    period_end     timestamptz not null,
    engine_api     text not null,
    engine_object  text not null,
    engine_value   numeric not null,
    value_scale    smallint not null,
    quantity       numeric not null,
    fetched_at     timestamptz not null default pg_catalog.now(),
    constraint billing_usage_pkey primary key (customer_id, meter_id, period_start),
    constraint billing_usage_engine_api check (engine_api in ('usage_records', 'meter_events')),
    constraint billing_usage_period check (period_end > period_start),
    constraint billing_usage_value_scale check (value_scale between 0 and 12)
);
comment on table meter.billing_usage is
    'The engine''s own usage figure per (customer, meter, period), fetched from its summaries before a close.';
comment on column meter.billing_usage.engine_object is
    'What was asked: the Billing Meter (mtr_...) or the subscription item (si_...).';
comment on column meter.billing_usage.engine_value is
    'The engine''s figure as it answered (aggregated_value or total_usage), in engine units.';
comment on column meter.billing_usage.quantity is
    'engine_value / 10^value_scale: the figure in the meter''s own unit, compared with our invoice.';

grant select on meter.billing_usage to meter_analyst;
