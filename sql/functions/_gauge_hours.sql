-- meter._gauge_hours(customer_id, meter_id, from, to, end_xid, end_id): a time-weighted gauge's
-- hourly quantities over [from, to) (whole UTC hours), from raw events.
--
-- Each event's value holds from its occurred_at until the next event's (order: occurred_at,
-- then idempotency key, byte order; so of two events at one instant only the greater key's value
-- holds), the last one until `to`; the value held when `from` starts is the last event before
-- it. An hour's quantity = round(Σ value × seconds held in the hour / 3600, 6), exact numeric
-- arithmetic (epoch of an interval is numeric, to the microsecond). Hours where nothing is held
-- are left out.
--
-- Which events: with end_xid, those the rollup holds (below the watermark position (end_xid,
-- end_id), minus the cancellations it subtracted: rollup_run, rollup_verify); without, every
-- event not cancelled (the reconciliation's raw figure).
create or replace function meter._gauge_hours(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_from        timestamptz,
    p_to          timestamptz,
    p_end_xid     xid8 default null,
    p_end_id      bigint default null)
returns table (hour timestamptz, quantity numeric)
language sql
stable
security definer  -- the reconciliation's readers (analysts) may not read raw events themselves
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
    with points as (
        -- the value held when the range starts (the last event before it: one index probe
        -- backwards on (customer, meter, occurred_at)), and every change within the range; never
        -- the series' whole history
        (select e.occurred_at, e.idempotency_key, e.value
         from meter.events e
         where e.customer_id = p_customer_id and e.meter_id = p_meter_id and e.occurred_at < p_from
           and (p_end_xid is null or (e.xid, e.id) < (p_end_xid, p_end_id))
           and not exists (select 1 from meter.event_cancellations c
                           where c.event_id = e.id and (p_end_xid is null or c.rolled_up_at is not null))
         order by e.occurred_at desc, e.idempotency_key collate "C" desc
         limit 1)
        union all
        select e.occurred_at, e.idempotency_key, e.value
        from meter.events e
        where e.customer_id = p_customer_id and e.meter_id = p_meter_id
          and e.occurred_at >= p_from and e.occurred_at < p_to
          and (p_end_xid is null or (e.xid, e.id) < (p_end_xid, p_end_id))
          and not exists (select 1 from meter.event_cancellations c
                          where c.event_id = e.id and (p_end_xid is null or c.rolled_up_at is not null))
    ),
    segments as (
        select greatest(p.occurred_at, p_from) as s,
               coalesce(pg_catalog.lead(p.occurred_at) over (order by p.occurred_at, p.idempotency_key collate "C"), p_to) as e,
               p.value
        from points p
    )
    select g.h, pg_catalog.round(pg_catalog.sum(s.value * extract(epoch from
               least(s.e, g.h + interval '1 hour') - greatest(s.s, g.h)) / 3600), 6)
    from segments s
    cross join lateral pg_catalog.generate_series(pg_catalog.date_trunc('hour', s.s), s.e - interval '1 microsecond',
                                                  interval '1 hour') g(h)
    where s.e > s.s
    group by g.h
    order by g.h
$$;

comment on function meter._gauge_hours(bigint, bigint, timestamptz, timestamptz, xid8, bigint) is
    'A time-weighted gauge''s hourly quantities over whole UTC hours [from, to), from raw events (value x hours, 6 decimals).';

revoke all on function meter._gauge_hours(bigint, bigint, timestamptz, timestamptz, xid8, bigint) from public;
-- (the reconciliation view calls it; a view's function calls run with the reader's rights)
grant execute on function meter._gauge_hours(bigint, bigint, timestamptz, timestamptz, xid8, bigint) to meter_analyst;
