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
    v_shard   integer;
    v_shards  integer;
    v_n       bigint;
begin
    events := 0;
    waiting := 0;
    -- per rollup shard: its customers' events past its watermark (an index range each)
    for v_shard, v_shards, v_xid, v_id in
        select w.shard, w.shard_count, w.position_xid, w.position_id from meter.rollup_watermark w order by w.shard
    loop
        select pg_catalog.count(*) into v_n
        from (select 1 from meter.events e
              where (e.xid, e.id) >= (v_xid, v_id) and e.customer_id % v_shards = v_shard limit 1000000) p;
        events := least(events + v_n, 1000000::bigint);
        select pg_catalog.count(*) into v_n
        from (select 1 from meter.events e
              where (e.xid, e.id) >= (v_xid, v_id) and e.xid >= v_horizon and e.customer_id % v_shards = v_shard
              limit 1000000) p;
        waiting := least(waiting + v_n, 1000000::bigint);
    end loop;
end;
$$;

comment on function meter._rollup_pending() is
    'Committed events past the rollup watermark, and those waiting on the horizon (each capped at 1,000,000).';

revoke all on function meter._rollup_pending() from public;
grant execute on function meter._rollup_pending() to meter_analyst;
