-- 0014_gauge_time_weighted: the time_weighted_sum aggregation, a gauge integrated over time
-- (issue 15: storage billed in GB-hours; Lago's weighted_sum, OpenMeter's and Polar's GB-month).
--
-- Each event's value holds from its occurred_at until the next event of the same customer and
-- meter (by occurred_at, then the greatest idempotency key: of two events at one instant the
-- greater key's value holds), and the last one until now. An hour's quantity is that value
-- integrated over the hour, in value x hours, rounded to 6 decimals (half away from zero):
--
--   quantity(h) = round(Σ value × seconds held within [h, h + 1 h) / 3600, 6)
--
-- so a period's total is the exact Σ of its hours, and the hours are what the billing engine
-- receives (one figure per hour, like a sum meter). Rows are written for complete hours only
-- (before the current UTC hour), from the series' first event on, also for hours without events
-- (the value still holds): rollup_run recomputes a series from the hour of any event or
-- cancellation it folds, and each run extends every series to the last complete hour.
--
--   gauge_series   per (customer, meter) of a time_weighted_sum meter: the hour up to which its
--                  rollup rows are accrued (exclusive)
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

alter table meter.meter_versions
    drop constraint meter_versions_aggregation,
    add constraint meter_versions_aggregation
        check (aggregation in ('count', 'sum', 'max', 'unique_count', 'latest', 'time_weighted_sum'));

create table meter.gauge_series (
    customer_id    bigint not null references meter.customers (id),
    meter_id       bigint not null references meter.meters (id),
    accrued_until  timestamptz not null,
    updated_at     timestamptz not null default pg_catalog.now(),
    constraint gauge_series_pkey primary key (customer_id, meter_id),
    constraint gauge_series_hour check (pg_catalog.date_trunc('hour', accrued_until, 'UTC') = accrued_until)
);
comment on table meter.gauge_series is
    'Time-weighted gauges: the UTC hour up to which each (customer, meter) series has its rollup rows (exclusive).';

grant select on meter.gauge_series to meter_analyst;
