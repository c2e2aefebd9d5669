-- meter.rollup_lag_seconds(): how stale the rollups are, in seconds; 0 when nothing is pending.
--
-- The age of the oldest committed event or cancellation not yet rolled up. For events, "oldest"
-- is taken in the rollup's own order, (xid, id): the first pending event, whose transaction is the
-- oldest pending one; its received_at (that transaction's start) is what the figure reports. Two
-- index probes, whatever the backlog: cheap enough for every GET /v1/usage and every second of the
-- serve loop. The first event at or above the horizon is probed too, since it may be older than
-- the first one below it.
create or replace function meter.rollup_lag_seconds()
returns numeric
language plpgsql
volatile  -- reads clock_timestamp()
security definer  -- callers (meter_ingest for GET /v1/usage, meter_analyst) need not read raw events
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_custom_plan
as $$
declare
    v_xid     xid8;
    v_id      bigint;
    v_horizon xid8 := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
    v_oldest  timestamptz;
    v_shard   integer;
    v_shards  integer;
begin
    select pg_catalog.min(c.cancelled_at) into v_oldest from meter.event_cancellations c where c.rolled_up_at is null;
    -- per rollup shard: the first of its customers' events past its watermark, and the first
    -- waiting on the horizon
    for v_shard, v_shards, v_xid, v_id in
        select w.shard, w.shard_count, w.position_xid, w.position_id from meter.rollup_watermark w order by w.shard
    loop
        select least(v_oldest,
            (select e.received_at from meter.events e
             where (e.xid, e.id) >= (v_xid, v_id) and e.customer_id % v_shards = v_shard order by e.xid, e.id limit 1),
            (select e.received_at from meter.events e
             where (e.xid, e.id) >= (v_xid, v_id) and e.xid >= v_horizon and e.customer_id % v_shards = v_shard
             order by e.xid, e.id limit 1))
          into v_oldest;
    end loop;
    return coalesce(round(extract(epoch from pg_catalog.clock_timestamp() - v_oldest)::numeric, 3), 0);
end;
$$;

comment on function meter.rollup_lag_seconds() is
    'Seconds since the oldest committed event or cancellation not yet rolled up arrived; 0 when none.';

revoke all on function meter.rollup_lag_seconds() from public;
grant execute on function meter.rollup_lag_seconds() to meter_ingest, meter_analyst;
