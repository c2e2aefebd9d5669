-- 0013_gauge_latest: the `latest` aggregation, a gauge (issue 15: "seats at the end of the
-- period" is the last value reported, not a sum of events).
--
--   meter_versions.aggregation   gains 'latest': a period's quantity is the value of its last
--                                event by occurred_at, ties broken by the greatest idempotency key
--                                (byte order, COLLATE "C"), so the result depends on the events
--                                alone, never on their arrival order; 0 without events (the value
--                                is not carried over from an earlier period, as Lago's latest)
--   rollup_hourly.latest_*       the hour's last event (occurred_at, idempotency key, value),
--                                folded by meter.rollup_run (the later of two wins) and
--                                recomputed from raw events when a cancellation hits the hour
--
-- The three columns are null for meters that never had a latest version (their events are not
-- read for them). Adding nullable columns without a default rewrites nothing.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

alter table meter.meter_versions
    drop constraint meter_versions_aggregation,
    add constraint meter_versions_aggregation check (aggregation in ('count', 'sum', 'max', 'unique_count', 'latest'));

alter table meter.rollup_hourly
    add column latest_at timestamptz,
    add column latest_key text,
    add column latest_value numeric;
comment on column meter.rollup_hourly.latest_value is
    'Meters with a latest version: the value of the hour''s last event (by occurred_at, then the greatest idempotency key).';

-- rollup_verify gains the latest columns (sql/functions/rollup_verify.sql).
drop function if exists meter.rollup_verify(timestamptz, timestamptz);
