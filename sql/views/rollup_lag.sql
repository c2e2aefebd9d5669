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
create or replace view meter.rollup_lag as
with w as (
    select * from meter.rollup_watermark where name = 'events'
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
       b.query      as horizon_query
from w cross join h cross join pending cross join cancels
left join blocker b on pending.waiting > 0;

comment on view meter.rollup_lag is
    'Rollup watermark, pending events and cancellations, lag in seconds, and the transaction holding the horizon.';

grant select on meter.rollup_lag to meter_analyst;
