-- meter.rollup_verify(from, to): recompute the hourly rollups of [from, to) from raw events and
-- list every hour where they differ. Empty when all is well.
--
-- What "all is well" means: for every customer, meter and UTC hour, meter.rollup_hourly holds
-- exactly the events the watermark says are folded ((xid, id) below the watermark), net of the
-- cancellations the rollup has subtracted (rolled_up_at set): same event count, same sum, same
-- max, and for meters with a latest version the same last event's value (latest_value); for a
-- time-weighted gauge, each hour up to its series' accrued_until holds the integral of the
-- values held (meter._gauge_hours over the same events; with dimensions the Σ of one series per
-- combination of values, meter._gauge_dims_hours, each also its dimension row); meter.rollup_hourly_unique holds exactly their distinct unique_property values with
-- the same counts; and meter.rollup_hourly_dims holds, for meters with dimensions, exactly their
-- dimension values (meter._dimension_values of the version in force) with the same count, sum
-- and max (rows left at 0 events by cancellations count as absent). An event counted twice, or skipped behind the watermark, shows up here.
-- Events not yet folded are not differences: they are lag (meter.rollup_lag); to check
-- everything, drain first (`meterctl rollup run` until nothing is pending).
--
-- One SQL statement, so one snapshot: a rollup committing meanwhile cannot produce a false
-- difference. from and to are widened to whole UTC hours.
create or replace function meter.rollup_verify(p_from timestamptz, p_to timestamptz)
returns table (
    customer_id      bigint,
    meter_id         bigint,
    hour             timestamptz,
    rollup_events    bigint,
    raw_events       bigint,
    rollup_quantity  numeric,
    raw_quantity     numeric,
    rollup_max       numeric,
    raw_max          numeric,
    rollup_latest    numeric,
    raw_latest       numeric,
    unique_values_differing bigint,
    dimension_values_differing bigint
)
language sql
stable
security definer  -- analysts may run it without reading raw events themselves
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
set jit = off
set work_mem = '256MB'
as $$
with bounds as (
    select pg_catalog.date_trunc('hour', p_from) as lo,
           pg_catalog.date_trunc('hour', p_to)
             + case when pg_catalog.date_trunc('hour', p_to) < p_to then interval '1 hour'
                    else interval '0' end as hi
),
folded as (
    -- the events the rollups must hold: folded by the watermark, not subtracted by a cancellation
    select e.customer_id, e.meter_id,
           pg_catalog.date_bin(interval '1 hour', e.occurred_at, timestamptz '2000-01-01 00:00:00+00') as hour,
           e.value, e.properties, e.occurred_at, e.idempotency_key,
           exists (select 1 from meter.event_cancellations c
                   where c.event_id = e.id and c.rolled_up_at is not null) as cancelled
    -- (folded: below the watermark of the customer's rollup shard)
    from meter.events e join meter.rollup_watermark w on w.shard = e.customer_id % w.shard_count, bounds b
    where e.occurred_at >= b.lo and e.occurred_at < b.hi
      and (e.xid, e.id) < (w.position_xid, w.position_id)
),
raw_events as (
    select f.customer_id, f.meter_id, f.hour,
           pg_catalog.count(*) filter (where not f.cancelled) as events,
           -- (a time-weighted gauge's events add no quantity: raw_gauges integrates it)
           coalesce(pg_catalog.sum(f.value) filter (where not f.cancelled and f.meter_id not in (
               select v.meter_id from meter.meter_versions v where v.aggregation = 'time_weighted_sum')), 0) as quantity,
           pg_catalog.max(f.value) filter (where not f.cancelled) as max_value,
           -- the last event's value, for the meters that keep it (null for the others)
           case when f.meter_id in (select v.meter_id from meter.meter_versions v where v.aggregation = 'latest') then
               (pg_catalog.array_agg(f.value order by f.occurred_at desc, f.idempotency_key collate "C" desc)
                    filter (where not f.cancelled))[1]
           end as latest_value
    from folded f
    group by 1, 2, 3
),
gauge_dims as (
    -- gauges with dimensions: one series per combination of values (meter._gauge_dims_hours)
    select g.customer_id, g.meter_id, q.hour, q.dims, q.quantity
    from meter.gauge_series g
    cross join bounds b
    join meter.rollup_watermark w on w.shard = g.customer_id % w.shard_count
    cross join lateral meter._gauge_dims_hours(g.customer_id, g.meter_id, b.lo, least(b.hi, g.accrued_until),
                                               w.position_xid, w.position_id) q
    where b.lo < least(b.hi, g.accrued_until) and q.quantity <> 0
      and exists (select 1 from meter.meter_versions v where v.meter_id = g.meter_id and pg_catalog.cardinality(v.dimensions) > 0)
),
raw_gauges as (
    select g.customer_id, g.meter_id, q.hour, q.quantity
    from meter.gauge_series g
    cross join bounds b
    join meter.rollup_watermark w on w.shard = g.customer_id % w.shard_count
    cross join lateral meter._gauge_hours(g.customer_id, g.meter_id, b.lo, least(b.hi, g.accrued_until),
                                          w.position_xid, w.position_id) q
    where b.lo < least(b.hi, g.accrued_until) and q.quantity <> 0
      and not exists (select 1 from meter.meter_versions v where v.meter_id = g.meter_id and pg_catalog.cardinality(v.dimensions) > 0)
    union all
    select x.customer_id, x.meter_id, x.hour, pg_catalog.sum(x.quantity) from gauge_dims x group by 1, 2, 3
),
raw as (
    select coalesce(a.customer_id, t.customer_id) as customer_id, coalesce(a.meter_id, t.meter_id) as meter_id,
           coalesce(a.hour, t.hour) as hour, coalesce(a.events, 0) as events,
           coalesce(a.quantity, 0) + coalesce(t.quantity, 0) as quantity, a.max_value, a.latest_value
    from raw_events a
    full join raw_gauges t on t.customer_id = a.customer_id and t.meter_id = a.meter_id and t.hour = a.hour
),
raw_unique as (
    select f.customer_id, f.meter_id, f.hour, f.properties ->> v.unique_property as unique_value,
           pg_catalog.count(*) as events
    from folded f
    join meter.meter_version_ranges v
      on v.meter_id = f.meter_id and v.unique_property is not null
     and f.hour >= v.effective_from and f.hour < v.effective_until
    where not f.cancelled and f.properties ->> v.unique_property is not null
    group by 1, 2, 3, 4
),
rolled_unique as (
    select u.customer_id, u.meter_id, u.hour, u.unique_value, u.event_count as events
    from meter.rollup_hourly_unique u, bounds b
    where u.hour >= b.lo and u.hour < b.hi and u.event_count > 0
),
unique_diff as (
    select coalesce(a.customer_id, r.customer_id) as customer_id,
           coalesce(a.meter_id, r.meter_id) as meter_id,
           coalesce(a.hour, r.hour) as hour,
           pg_catalog.count(*) as differing
    from raw_unique a
    full join rolled_unique r
      on r.customer_id = a.customer_id and r.meter_id = a.meter_id and r.hour = a.hour
     and r.unique_value = a.unique_value
    where a.events is distinct from r.events
    group by 1, 2, 3
),
raw_dims_events as (
    -- (grouped by the values as text[], named once per group, as rollup_run does; a gauge's events
    -- add no quantity: gauge_dims integrates it)
    select g.customer_id, g.meter_id, g.hour, meter._dimension_object(g.dimensions, g.dvals) as dims,
           g.events, g.quantity, g.max_value
    from (select f.customer_id, f.meter_id, f.hour, v.dimensions,
                 array[f.properties ->> v.dimensions[1], f.properties ->> v.dimensions[2], f.properties ->> v.dimensions[3]] as dvals,
                 pg_catalog.count(*) as events,
                 pg_catalog.sum(case when v.aggregation = 'time_weighted_sum' then 0 else f.value end) as quantity,
                 pg_catalog.max(f.value) as max_value
          from folded f
          join meter.meter_version_ranges v
            on v.meter_id = f.meter_id and pg_catalog.cardinality(v.dimensions) > 0
           and f.hour >= v.effective_from and f.hour < v.effective_until
          where not f.cancelled
          group by 1, 2, 3, 4, 5) g
),
raw_dims as (
    select coalesce(a.customer_id, t.customer_id) as customer_id, coalesce(a.meter_id, t.meter_id) as meter_id,
           coalesce(a.hour, t.hour) as hour, coalesce(a.dims, t.dims) as dims, coalesce(a.events, 0) as events,
           coalesce(a.quantity, 0) + coalesce(t.quantity, 0) as quantity, a.max_value
    from raw_dims_events a
    full join gauge_dims t on t.customer_id = a.customer_id and t.meter_id = a.meter_id and t.hour = a.hour and t.dims = a.dims
),
rolled_dims as (
    select x.customer_id, x.meter_id, x.hour, x.dims, x.event_count as events, x.quantity, x.max_value
    from meter.rollup_hourly_dims x, bounds b
    where x.hour >= b.lo and x.hour < b.hi and (x.event_count <> 0 or x.quantity <> 0)
),
dims_diff as (
    select coalesce(a.customer_id, r.customer_id) as customer_id,
           coalesce(a.meter_id, r.meter_id) as meter_id,
           coalesce(a.hour, r.hour) as hour,
           pg_catalog.count(*) as differing
    from raw_dims a
    full join rolled_dims r
      on r.customer_id = a.customer_id and r.meter_id = a.meter_id and r.hour = a.hour and r.dims = a.dims
    where a.events is distinct from r.events or a.quantity is distinct from r.quantity
       or a.max_value is distinct from r.max_value
    group by 1, 2, 3
),
rolled as (
    select r.customer_id, r.meter_id, r.hour, r.event_count, r.quantity, r.max_value, r.latest_value
    from meter.rollup_hourly r, bounds b
    where r.hour >= b.lo and r.hour < b.hi
)
select coalesce(r.customer_id, a.customer_id, d.customer_id, dd.customer_id),
       coalesce(r.meter_id, a.meter_id, d.meter_id, dd.meter_id),
       coalesce(r.hour, a.hour, d.hour, dd.hour),
       r.event_count, coalesce(a.events, 0),
       r.quantity, coalesce(a.quantity, 0),
       r.max_value, a.max_value,
       r.latest_value, a.latest_value,
       coalesce(d.differing, 0),
       coalesce(dd.differing, 0)
from rolled r
full join raw a
  on a.customer_id = r.customer_id and a.meter_id = r.meter_id and a.hour = r.hour
full join unique_diff d
  on d.customer_id = coalesce(r.customer_id, a.customer_id)
 and d.meter_id = coalesce(r.meter_id, a.meter_id)
 and d.hour = coalesce(r.hour, a.hour)
full join dims_diff dd
  on dd.customer_id = coalesce(r.customer_id, a.customer_id, d.customer_id)
 and dd.meter_id = coalesce(r.meter_id, a.meter_id, d.meter_id)
 and dd.hour = coalesce(r.hour, a.hour, d.hour)
where coalesce(r.event_count, 0) <> coalesce(a.events, 0)
   or coalesce(r.quantity, 0) <> coalesce(a.quantity, 0)
   or r.max_value is distinct from a.max_value
   or r.latest_value is distinct from a.latest_value
   or d.differing is not null
   or dd.differing is not null
order by 1, 2, 3
$$;

comment on function meter.rollup_verify(timestamptz, timestamptz) is
    'Lists every hour of [from, to) whose rollup differs from a recomputation from raw events; empty when all is well.';

revoke all on function meter.rollup_verify(timestamptz, timestamptz) from public;
grant execute on function meter.rollup_verify(timestamptz, timestamptz) to meter_analyst;
