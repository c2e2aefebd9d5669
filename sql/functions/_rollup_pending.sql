-- meter._rollup_pending(): the committed events past the rollup watermark, for meter.rollup_lag.
--
-- Returns how many there are and how many of them sit at or above the horizon (waiting for an
-- older transaction to finish, not for the rollup). Both counts stop at 1,000,000 (a value of
-- 1,000,000 means "at least"): the view is read every second by the serve loop, and counting a
-- backlog of tens of millions of rows each time would cost more than the figure is worth.
--
-- A function and not plain SQL in the view: planned with the watermark's actual values
-- (plan_cache_mode = force_custom_plan), each count is an index range scan on (xid, id); with the
-- values unknown the planner assumed a third of the table and scanned all of it.
create or replace function meter._rollup_pending(
    out events  bigint,
    out waiting bigint
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
    -- one scan from the lowest shard's position; each event against its customer's shard's
    select w.position_xid, w.position_id into v_xid, v_id
    from meter.rollup_watermark w order by w.position_xid, w.position_id limit 1;
    select pg_catalog.count(*) into events
    from (select 1 from meter.events e
          join meter.rollup_watermark w on w.shard = e.customer_id % w.shard_count
          where (e.xid, e.id) >= (v_xid, v_id) and (e.xid, e.id) >= (w.position_xid, w.position_id)
          limit 1000000) p;
    select pg_catalog.count(*) into waiting
    from (select 1 from meter.events e
          join meter.rollup_watermark w on w.shard = e.customer_id % w.shard_count
          where (e.xid, e.id) >= (v_xid, v_id) and (e.xid, e.id) >= (w.position_xid, w.position_id)
            and e.xid >= v_horizon
          limit 1000000) p;
end;
$$;

comment on function meter._rollup_pending() is
    'Committed events past the rollup watermark, and those waiting on the horizon (each capped at 1,000,000).';

revoke all on function meter._rollup_pending() from public;
grant execute on function meter._rollup_pending() to meter_analyst;
