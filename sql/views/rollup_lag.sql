-- meter.rollup_lag: how far the rollups are behind, and why. One row. For operators in psql,
-- for `meterctl rollup status` and for the meter_rollup_lag_seconds gauge.
--
--   lag_seconds            age of the oldest committed event (or cancellation) not yet rolled up;
--                          0 when nothing is pending (meter.rollup_lag_seconds())
--   pending_events         committed events past the watermark (counted up to 1,000,000)
--   waiting_on_horizon     of those, how many sit at or above the horizon: they wait for an older
--                          transaction to finish, not for the rollup worker (up to 1,000,000)
--   horizon_held_by_pid    when that older transaction exists: the backend holding it, its state,
--   horizon_xact_start     start and query (pg_stat_activity), or a prepared transaction (state
--   horizon_query          'prepared transaction <gid>', no pid). A long or idle-in-transaction
--                          session there holds every rollup back: see docs/runbook.md.
--   shards                 how many rollup shards fold at once (meter.rollup_watermark, one row
--                          each; position_* is the lowest shard's, last_run_* the latest run's,
--                          the totals sum every shard's)
create or replace view meter.rollup_lag as
-- (with rollup shards, decision 125: the lowest shard's position, the latest run of any shard,
-- totals over all shards, and how many shards there are)
with w as (
    select lo.position_xid, lo.position_id, lr.last_run_at, lr.last_run_events, lr.last_run_cancellations, lr.last_run_ms,
           agg.runs_total, agg.events_total, agg.cancellations_total, agg.shards
    from (select x.position_xid, x.position_id from meter.rollup_watermark x
          order by x.position_xid, x.position_id limit 1) lo
    cross join (select x.last_run_at, x.last_run_events, x.last_run_cancellations, x.last_run_ms from meter.rollup_watermark x
                order by x.last_run_at desc nulls last limit 1) lr
    cross join (select pg_catalog.sum(x.runs_total)::bigint as runs_total, pg_catalog.sum(x.events_total)::bigint as events_total,
                       pg_catalog.sum(x.cancellations_total)::bigint as cancellations_total,
                       pg_catalog.count(*)::integer as shards
                from meter.rollup_watermark x) agg
),
h as (
    select pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot()) as horizon
),
pending as (
    select p.events, p.waiting from meter._rollup_pending() p
),
cancels as (
    select pg_catalog.count(*) as n
    from meter.event_cancellations c
    where c.rolled_up_at is null
),
blocker as (
    (select a.pid, a.state, a.xact_start, a.query
     from pg_catalog.pg_stat_activity a, h
     where a.backend_xid = h.horizon::xid
       and a.pid <> pg_catalog.pg_backend_pid()
     limit 1)
    union all
    (select null::integer, 'prepared transaction ' || pg_catalog.quote_literal(x.gid), x.prepared, null::text
     from pg_catalog.pg_prepared_xacts x, h
     where x.transaction = h.horizon::xid)
    limit 1
)
select w.position_xid,
       w.position_id,
       h.horizon as horizon_xid,
       meter.rollup_lag_seconds() as lag_seconds,
       pending.events  as pending_events,
       pending.waiting as waiting_on_horizon,
       cancels.n       as pending_cancellations,
       w.last_run_at,
       w.last_run_events,
       w.last_run_cancellations,
       w.last_run_ms,
       w.runs_total,
       w.events_total,
       w.cancellations_total,
       b.pid        as horizon_held_by_pid,
       b.state      as horizon_state,
       b.xact_start as horizon_xact_start,
       b.query      as horizon_query,
       w.shards
from w cross join h cross join pending cross join cancels
left join blocker b on pending.waiting > 0;

comment on view meter.rollup_lag is
    'Rollup watermark, pending events and cancellations, lag in seconds, and the transaction holding the horizon.';

grant select on meter.rollup_lag to meter_analyst;
