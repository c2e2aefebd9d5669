-- meter._gauge_dims_hours(customer_id, meter_id, from, to, end_xid, end_id): a time-weighted gauge
-- with dimensions, per hour and dimension values: as meter._gauge_hours, each series being the
-- events of one combination of dimension values (meter._dimension_values under the meter's
-- dimensions, which a time_weighted_sum meter keeps for life, meter.meter_upsert). A value holds
-- from its event until the next event of the same values (occurred_at, then the greater
-- idempotency key), the last until `to`; the value each combination holds when `from` starts is
-- its last event before it. An hour's quantity per combination = round(Σ value × seconds held /
-- 3600, 6); the hour's total (rollup_hourly) is the Σ over the combinations: storage per region
-- adds up to the storage held.
--
-- Which events: as meter._gauge_hours (end_xid given: those the rollup holds; null: every event
-- not cancelled). Cost: the value held at `from` per combination is found among the series'
-- events before it (one pass over them, not one index probe as without dimensions).
create or replace function meter._gauge_dims_hours(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_from        timestamptz,
    p_to          timestamptz,
    p_end_xid     xid8 default null,
    p_end_id      bigint default null)
returns table (hour timestamptz, dims jsonb, quantity numeric)
language sql
stable
security definer  -- the reconciliation's readers (analysts) may not read raw events themselves
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
    with evs as (
        select e.occurred_at, e.idempotency_key, e.value,
               meter._dimension_values(e.properties, (select v.dimensions from meter.meter_versions v
                                                      where v.meter_id = p_meter_id order by v.version desc limit 1)) as dims
        from meter.events e
        where e.customer_id = p_customer_id and e.meter_id = p_meter_id and e.occurred_at < p_to
          and (p_end_xid is null or (e.xid, e.id) < (p_end_xid, p_end_id))
          and not exists (select 1 from meter.event_cancellations c
                          where c.event_id = e.id and (p_end_xid is null or c.rolled_up_at is not null))
    ),
    points as (
        (select distinct on (x.dims) x.occurred_at, x.idempotency_key, x.value, x.dims
         from evs x where x.occurred_at < p_from
         order by x.dims, x.occurred_at desc, x.idempotency_key collate "C" desc)
        union all
        select x.occurred_at, x.idempotency_key, x.value, x.dims from evs x where x.occurred_at >= p_from
    ),
    segments as (
        select p.dims, greatest(p.occurred_at, p_from) as s,
               coalesce(pg_catalog.lead(p.occurred_at) over (partition by p.dims order by p.occurred_at, p.idempotency_key collate "C"),
                        p_to) as e,
               p.value
        from points p
    )
    select g.h, s.dims, pg_catalog.round(pg_catalog.sum(s.value * extract(epoch from
               least(s.e, g.h + interval '1 hour') - greatest(s.s, g.h)) / 3600), 6)
    from segments s
    cross join lateral pg_catalog.generate_series(pg_catalog.date_trunc('hour', s.s), s.e - interval '1 microsecond',
                                                  interval '1 hour') g(h)
    where s.e > s.s
    group by g.h, s.dims
    order by g.h, s.dims
$$;

comment on function meter._gauge_dims_hours(bigint, bigint, timestamptz, timestamptz, xid8, bigint) is
    'A time-weighted gauge''s hourly quantities per dimension values over whole UTC hours [from, to), from raw events.';

revoke all on function meter._gauge_dims_hours(bigint, bigint, timestamptz, timestamptz, xid8, bigint) from public;
-- (the reconciliation view calls it; a view's function calls run with the reader's rights)
grant execute on function meter._gauge_dims_hours(bigint, bigint, timestamptz, timestamptz, xid8, bigint) to meter_analyst;
