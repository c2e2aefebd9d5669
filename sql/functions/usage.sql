-- meter.usage(customer, meter, from, to, granularity, group_by, filter): usage from the hourly
-- rollups, per bucket, for dashboards and invoice previews (GET /v1/usage calls it).
--
--   * customer and meter are external id and code; meter null = every meter of the customer.
--   * [from, to) must lie on UTC hour boundaries; granularity is hour, day or month, buckets are
--     UTC (billing-timezone periods are the month close's business).
--   * quantity applies the meter version in force at each hour: count = events, sum = sum of
--     value, max = largest value, unique_count = distinct values of unique_property within the
--     bucket (exact), latest = the value of the bucket's last event (by occurred_at, then the
--     greatest idempotency key), time_weighted_sum = Σ of the hours' integrals (value x hours). A bucket that spans a change of meter version is split into one row per
--     version, and so is a bucket clipped by from or to: bucket_start and bucket_end give the
--     row's actual interval.
--   * Only buckets with rolled-up rows appear (sparse). Events not yet rolled up are not counted:
--     see meter.rollup_lag for how fresh the figures are.
--   * Quantities are exact numerics, nothing is rounded; trailing fractional zeros are trimmed
--     (2.50 after a cancellation reads 2.5).
--   * Dimensions (meter.rollup_hourly_dims): group_by names dimensions of the meter (required
--     then) and splits each bucket per combination of their values, given in `dimensions`
--     ({name: value}, null for events without the property, and for hours of a meter version
--     that does not declare it); filter keeps the usage whose dimension values match, an object
--     {name: value, or [values]} (null matches the events without the property). Without either,
--     `dimensions` is null and the figures come from rollup_hourly. A unique_count or latest
--     meter cannot be grouped or filtered (0A000): distinct values and last values are not kept
--     per dimension (a time-weighted gauge's integrals are, per combination of values).
create or replace function meter.usage(
    p_customer    text,
    p_meter       text,
    p_from        timestamptz,
    p_to          timestamptz,
    p_granularity text default 'hour',
    p_group_by    text[] default null,
    p_filter      jsonb default null
)
returns table (
    customer      text,
    meter         text,
    bucket_start  timestamptz,
    bucket_end    timestamptz,
    meter_version integer,
    aggregation   text,
    quantity      numeric,
    event_count   bigint,
    dimensions    jsonb
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

    if p_group_by is not null or p_filter is not null then
        if p_meter is null then
            raise exception 'group_by and filter need a meter' using errcode = '22023';
        end if;
        if p_filter is not null and (pg_catalog.jsonb_typeof(p_filter) <> 'object' or exists (
                select 1 from pg_catalog.jsonb_each(p_filter) f
                where pg_catalog.jsonb_typeof(f.value) not in ('string', 'null', 'array')
                   or (pg_catalog.jsonb_typeof(f.value) = 'array' and exists (
                           select 1 from pg_catalog.jsonb_array_elements(f.value) a
                           where pg_catalog.jsonb_typeof(a) not in ('string', 'null'))))) then
            raise exception 'filter must be an object of dimension: value (a string, null, or an array of them)'
                using errcode = '22023';
        end if;
        if exists (select 1
                   from (select pg_catalog.unnest(coalesce(p_group_by, '{}'))
                         union all
                         select pg_catalog.jsonb_object_keys(coalesce(p_filter, '{}'))) n(name)
                   where n.name is null or n.name not in (
                       select d from meter.meter_versions v join meter.meters m on m.id = v.meter_id,
                                     pg_catalog.unnest(v.dimensions) d
                       where m.code = p_meter)) then
            raise exception 'meter % has no such dimension (group_by %, filter %)', pg_catalog.quote_literal(p_meter),
                p_group_by, p_filter using errcode = '22023';
        end if;
        if exists (select 1 from meter.meter_versions v join meter.meters m on m.id = v.meter_id
                   where m.code = p_meter and v.aggregation in ('unique_count', 'latest')) then
            raise exception 'meter % counts distinct values or takes the last value: its usage cannot be grouped or filtered by dimension',
                pg_catalog.quote_literal(p_meter) using errcode = '0A000';
        end if;

        return query
        with versions as (
            select v.meter_id, v.version, v.aggregation, v.effective_from, v.effective_until
            from meter.meter_version_ranges v
            join meter.meters m on m.id = v.meter_id
            where m.code = p_meter
        ),
        hours as (
            select x.meter_id, x.event_count, x.quantity, x.max_value, v.version, v.aggregation,
                   greatest(pg_catalog.date_trunc(p_granularity, x.hour), v.effective_from, p_from) as seg_start,
                   least(pg_catalog.date_trunc(p_granularity, x.hour) + v_unit, v.effective_until, p_to) as seg_end,
                   (select coalesce(pg_catalog.jsonb_object_agg(g, coalesce(x.dims -> g, 'null'::jsonb)), '{}'::jsonb)
                    from pg_catalog.unnest(coalesce(p_group_by, '{}')) g) as grouped
            from meter.rollup_hourly_dims x
            join versions v
              on v.meter_id = x.meter_id and x.hour >= v.effective_from and x.hour < v.effective_until
            -- (a time-weighted gauge's hours hold a quantity without events)
            where x.customer_id = v_customer_id and x.hour >= p_from and x.hour < p_to
              and (x.event_count <> 0 or x.quantity <> 0)
              and meter._dims_match(x.dims, coalesce(p_filter, '{}'))
        )
        select p_customer, p_meter, h.seg_start, h.seg_end, h.version, h.aggregation,
               pg_catalog.trim_scale(case h.aggregation
                   when 'count' then pg_catalog.sum(h.event_count)::numeric
                   when 'sum' then pg_catalog.sum(h.quantity)
                   when 'max' then coalesce(pg_catalog.max(h.max_value), 0)
                   when 'time_weighted_sum' then pg_catalog.sum(h.quantity)
               end),
               pg_catalog.sum(h.event_count)::bigint,
               h.grouped
        from hours h
        group by h.seg_start, h.seg_end, h.version, h.aggregation, h.grouped
        order by h.seg_start, h.grouped::text collate "C";
        return;
    end if;

    return query
    with versions as (
        select v.meter_id, v.version, v.aggregation, v.effective_from, v.effective_until
        from meter.meter_version_ranges v
        join meter.meters m on m.id = v.meter_id
        where p_meter is null or m.code = p_meter
    ),
    hours as (
        select r.meter_id, r.event_count, r.quantity, r.max_value, r.latest_at, r.latest_key, r.latest_value,
               v.version, v.aggregation,
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
               when 'time_weighted_sum' then pg_catalog.sum(h.quantity)
               when 'max' then coalesce(pg_catalog.max(h.max_value), 0)
               when 'latest' then coalesce((pg_catalog.array_agg(h.latest_value order by h.latest_at desc, h.latest_key collate "C" desc)
                                            filter (where h.latest_at is not null))[1], 0)
               when 'unique_count' then (
                   select pg_catalog.count(distinct u.value_hash)::numeric
                   from meter.rollup_hourly_unique u
                   where u.customer_id = v_customer_id and u.meter_id = h.meter_id
                     and u.hour >= h.seg_start and u.hour < h.seg_end and u.event_count > 0)
           end),
           pg_catalog.sum(h.event_count)::bigint,
           null::jsonb
    from hours h
    join meter.meters m on m.id = h.meter_id
    group by m.code, h.meter_id, h.seg_start, h.seg_end, h.version, h.aggregation
    order by m.code, h.seg_start;
end;
$$;

comment on function meter.usage(text, text, timestamptz, timestamptz, text, text[], jsonb) is
    'Usage per bucket (hour, day, month; UTC) from the hourly rollups, with each meter version''s aggregation.';

revoke all on function meter.usage(text, text, timestamptz, timestamptz, text, text[], jsonb) from public;
grant execute on function meter.usage(text, text, timestamptz, timestamptz, text, text[], jsonb) to meter_ingest, meter_analyst;
