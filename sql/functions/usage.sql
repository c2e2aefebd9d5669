-- meter.usage(customer, meter, from, to, granularity): usage from the hourly rollups, per bucket,
-- for dashboards and invoice previews (GET /v1/usage calls it).
--
--   * customer and meter are external id and code; meter null = every meter of the customer.
--   * [from, to) must lie on UTC hour boundaries; granularity is hour, day or month, buckets are
--     UTC (billing-timezone periods are the month close's business).
--   * quantity applies the meter version in force at each hour: count = events, sum = sum of
--     value, max = largest value, unique_count = distinct values of unique_property within the
--     bucket (exact). A bucket that spans a change of meter version is split into one row per
--     version, and so is a bucket clipped by from or to: bucket_start and bucket_end give the
--     row's actual interval.
--   * Only buckets with rolled-up rows appear (sparse). Events not yet rolled up are not counted:
--     see meter.rollup_lag for how fresh the figures are.
--   * Quantities are exact numerics, nothing is rounded; trailing fractional zeros are trimmed
--     (2.50 after a cancellation reads 2.5).
create or replace function meter.usage(
    p_customer    text,
    p_meter       text,
    p_from        timestamptz,
    p_to          timestamptz,
    p_granularity text default 'hour'
)
returns table (
    customer      text,
    meter         text,
    bucket_start  timestamptz,
    bucket_end    timestamptz,
    meter_version integer,
    aggregation   text,
    quantity      numeric,
    event_count   bigint
)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
#variable_conflict use_column
declare
    v_customer_id bigint;
    v_unit        interval;
begin
    v_unit := case p_granularity when 'hour' then interval '1 hour' when 'day' then interval '1 day'
                                 when 'month' then interval '1 month' end;
    if v_unit is null then
        raise exception 'granularity must be hour, day or month, got %', coalesce(p_granularity, 'null')
            using errcode = '22023';
    end if;
    if p_from is null or p_to is null or p_from >= p_to then
        raise exception 'from must be before to' using errcode = '22023';
    end if;
    if pg_catalog.date_trunc('hour', p_from) <> p_from or pg_catalog.date_trunc('hour', p_to) <> p_to then
        raise exception 'from and to must lie on UTC hour boundaries' using errcode = '22023';
    end if;
    select c.id into v_customer_id from meter.customers c where c.external_id = p_customer;
    if not found then
        raise exception 'no customer with external id %', pg_catalog.quote_literal(p_customer)
            using errcode = 'P0002';
    end if;
    if p_meter is not null and not exists (select 1 from meter.meters m where m.code = p_meter) then
        raise exception 'no meter with code %', pg_catalog.quote_literal(p_meter)
            using errcode = 'P0002';
    end if;

    return query
    with versions as (
        select v.meter_id, v.version, v.aggregation, v.effective_from, v.effective_until
        from meter.meter_version_ranges v
        join meter.meters m on m.id = v.meter_id
        where p_meter is null or m.code = p_meter
    ),
    hours as (
        select r.meter_id, r.event_count, r.quantity, r.max_value, v.version, v.aggregation,
               greatest(pg_catalog.date_trunc(p_granularity, r.hour), v.effective_from, p_from) as seg_start,
               least(pg_catalog.date_trunc(p_granularity, r.hour) + v_unit, v.effective_until, p_to) as seg_end
        from meter.rollup_hourly r
        join versions v
          on v.meter_id = r.meter_id and r.hour >= v.effective_from and r.hour < v.effective_until
        where r.customer_id = v_customer_id and r.hour >= p_from and r.hour < p_to
    )
    select p_customer, m.code, h.seg_start, h.seg_end, h.version, h.aggregation,
           pg_catalog.trim_scale(case h.aggregation
               when 'count' then pg_catalog.sum(h.event_count)::numeric
               when 'sum' then pg_catalog.sum(h.quantity)
               when 'max' then coalesce(pg_catalog.max(h.max_value), 0)
               when 'unique_count' then (
                   select pg_catalog.count(distinct u.value_hash)::numeric
                   from meter.rollup_hourly_unique u
                   where u.customer_id = v_customer_id and u.meter_id = h.meter_id
                     and u.hour >= h.seg_start and u.hour < h.seg_end and u.event_count > 0)
           end),
           pg_catalog.sum(h.event_count)::bigint
    from hours h
    join meter.meters m on m.id = h.meter_id
    group by m.code, h.meter_id, h.seg_start, h.seg_end, h.version, h.aggregation
    order by m.code, h.seg_start;
end;
$$;

comment on function meter.usage(text, text, timestamptz, timestamptz, text) is
    'Usage per bucket (hour, day, month; UTC) from the hourly rollups, with each meter version''s aggregation.';

revoke all on function meter.usage(text, text, timestamptz, timestamptz, text) from public;
grant execute on function meter.usage(text, text, timestamptz, timestamptz, text) to meter_ingest, meter_analyst;
