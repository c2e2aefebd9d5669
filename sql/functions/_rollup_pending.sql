-- meter._rollup_pending(): the committed events past the rollup watermark, for meter.rollup_lag.
--
-- Returns their number, how many sit at or above the horizon (waiting for an older transaction,
-- not for the rollup), and the oldest received_at. A function and not plain SQL in the view:
-- planned with the watermark's actual values (plan_cache_mode = force_custom_plan), the scan is
-- bounded by the (xid, id) index; with the values unknown, the planner assumed a third of the
-- table and scanned all of it (0.6 s per call on 20M events, every second in the serve loop).
create or replace function meter._rollup_pending(
    out events  bigint,
    out waiting bigint,
    out oldest  timestamptz
)
language plpgsql
stable
security definer  -- meter.rollup_lag's readers (meter_analyst) need not read raw events
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_custom_plan
as $$
declare
    v_xid     xid8;
    v_id      bigint;
    v_horizon xid8 := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
begin
    select w.position_xid, w.position_id into v_xid, v_id
    from meter.rollup_watermark w where w.name = 'events';
    select pg_catalog.count(*), pg_catalog.count(*) filter (where e.xid >= v_horizon), pg_catalog.min(e.received_at)
      into events, waiting, oldest
    from meter.events e
    where (e.xid, e.id) >= (v_xid, v_id);
end;
$$;

comment on function meter._rollup_pending() is
    'Committed events past the rollup watermark: count, count waiting on the horizon, oldest received_at.';

revoke all on function meter._rollup_pending() from public;
grant execute on function meter._rollup_pending() to meter_analyst;
