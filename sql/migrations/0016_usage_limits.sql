-- 0016_usage_limits: a plan may cap a meter's usage per billing period (issue 16: "may this
-- customer do one more?"), for the whole meter or for the usage under a filter of its dimensions.
--
--   plan_limits   (plan, meter, filter) -> the period's cap, in the meter's unit. The filter selects
--                 the usage it counts ({dimension: [values]}, meter._dims_match); '{}' counts the
--                 whole meter. Limits of one meter may overlap (the whole meter and one model);
--                 a check considers those that match the dimension values it is asked about.
--
-- meter.limit_check reads them with the period's usage from the rollups plus what is committed but
-- not rolled up yet, so a check right after an ingest sees the event.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

create table meter.plan_limits (
    plan_id     bigint not null references meter.plans (id),
    meter_id    bigint not null references meter.meters (id),
    filter      jsonb not null default '{}',
    quantity    numeric not null,
    created_at  timestamptz not null default pg_catalog.now(),
    constraint plan_limits_pkey primary key (plan_id, meter_id, filter),
    constraint plan_limits_filter check (pg_catalog.jsonb_typeof(filter) = 'object'),
    constraint plan_limits_quantity check (quantity > 0 and quantity < 'Infinity')
);
comment on table meter.plan_limits is
    'Usage limits per billing period: a plan caps a meter (or the usage under a filter of its dimensions).';
comment on column meter.plan_limits.filter is
    'The usage the limit counts ({dimension: [values]}); ''{}'': the whole meter.';

grant select on meter.plan_limits to meter_analyst;
