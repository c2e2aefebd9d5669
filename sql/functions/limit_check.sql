-- meter.limit_check(customer, meter, dimensions, quantity): where a customer stands against its
-- plan's limits on a meter in the open billing period (in the customer's billing timezone), and
-- whether `quantity` more (default 1) is allowed. One row per limit of the plan on the meter:
--
--   filter     the usage the limit counts ('{}': the whole meter)
--   limit_quantity, used, remaining (never below 0)
--   applies    whether the limit counts usage with `dimensions` ({dimension: value}, the next
--              event's values; null: every limit applies)
--   allowed    count/sum: used + quantity <= limit; max: the next value (quantity) <= limit
--
-- `used` is the period's usage from the rollups (meter.limit_usage: the period totals the rollup
-- keeps, one row for the whole meter, one per combination of values under a filter), plus what is committed but not rolled up yet: events past the rollup watermark (the
-- read-only twin of the fold: count, Σ values, max), minus the cancellations of rolled-up events
-- not subtracted yet (count and sum; a max drops only once rolled up). So a check right after an
-- ingest or a cancellation sees it, whatever the rollup lag.
--
-- Cost (the check sits in front of the customer's work): three statements whatever the period's
-- length: the customer, meter, plan, period and watermark in one; the customer's events past the
-- watermark (planned for the actual watermark); then every limit from its period totals, those
-- events and the pending cancellations.
--
-- Refusals: unknown customer or meter, or no plan in force in the period (P0002). No row: the plan
-- sets no limit on the meter, or customer is null (the service passes null when the request's key
-- may not read, so its key check and this check are one statement: one round trip). Reads only; SECURITY DEFINER for the service's role.
create or replace function meter.limit_check(
    p_customer   text,
    p_meter      text,
    p_dimensions jsonb default null,
    p_quantity   numeric default 1)
returns table (period text, filter jsonb, limit_quantity numeric, used numeric, remaining numeric,
               applies boolean, allowed boolean, aggregation text)
language plpgsql
stable
security definer
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
-- (no JIT: a check is a few small statements; compiling them cost more than running them)
set jit = off
-- Generic plans, made once per session: every statement here is a key lookup, shaped so that its
-- generic plan is the right one, except the one planned per call (EXECUTE, which this setting
-- does not touch). Planning them on each call would cost more than running them.
set plan_cache_mode = force_generic_plan
as $$
#variable_conflict use_column
declare
    v_cid     bigint;
    v_tz      text;
    v_m       bigint;
    v_plan    bigint;
    v_period  text;
    v_local   timestamp;
    v_start   timestamptz;
    v_end     timestamptz;
    v_agg     text;
    v_wm_xid  xid8;
    v_wm_id   bigint;
    v_ids     bigint[];
    v_values  numeric[];
    v_props   jsonb[];
    v_at      timestamptz[];
    v_c_vals  numeric[];
    v_c_props jsonb[];
    v_c_at    timestamptz[];
    v_signs   integer[];
    v_dims    jsonb[];
    v_any     boolean;
    v_filtered boolean;
    v_l       record;
    v_used    numeric;
    v_pn      numeric;
    v_pq      numeric;
    v_pmx     numeric;
begin
    if p_customer is null then
        return;
    end if;
    -- 1. who, what, which plan, the meter's aggregation now, where the rollup stands: one statement
    select c.id, c.billing_timezone, m.id, cp.plan_id, v.aggregation, w.position_xid, w.position_id
      into v_cid, v_tz, v_m, v_plan, v_agg, v_wm_xid, v_wm_id
    from (select 1) one
    left join meter.customers c on c.external_id = p_customer
    left join meter.meters m on m.code = p_meter
    left join lateral (select x.plan_id from meter.customer_plans x
                       where x.customer_id = c.id
                         and x.effective_from <= pg_catalog.to_char(pg_catalog.now() at time zone c.billing_timezone, 'YYYY-MM')
                       order by x.effective_from desc limit 1) cp on true
    left join lateral (select mv.aggregation from meter.meter_versions mv
                       where mv.meter_id = m.id and mv.effective_from <= pg_catalog.now()
                       order by mv.effective_from desc limit 1) v on true
    -- (the watermark of the customer's rollup shard)
    left join meter.rollup_watermark w on w.shard = c.id % w.shard_count;
    if v_cid is null then
        raise exception 'no customer with external id %', p_customer using errcode = 'P0002';
    end if;
    if v_m is null then
        raise exception 'no meter with code %', coalesce(p_meter, 'null') using errcode = 'P0002';
    end if;
    -- the open period and its bounds, as meter.billing_period and meter._period_of compute them
    -- (written out: a SQL function's body would be planned again on every call)
    v_period := pg_catalog.to_char(pg_catalog.now() at time zone v_tz, 'YYYY-MM');
    v_local := pg_catalog.date_trunc('month', pg_catalog.now() at time zone v_tz);
    v_start := v_local at time zone v_tz;
    v_end := (v_local + interval '1 month') at time zone v_tz;
    if v_plan is null then
        raise exception 'customer % has no plan in force in %', p_customer, v_period using errcode = 'P0002';
    end if;
    select pg_catalog.count(*) > 0, coalesce(pg_catalog.bool_or(l.filter <> '{}'), false) into v_any, v_filtered
    from meter.plan_limits l where l.plan_id = v_plan and l.meter_id = v_m;
    if not v_any then
        return;
    end if;

    -- 2. committed, not rolled up yet: the customer's events of the meter past the watermark.
    -- Planned for the actual watermark, the one statement planned per call (and kept to one
    -- table for that): a cached generic plan cannot tell that few events lie past it, and would
    -- read the customer's month through (customer, meter, occurred_at).
    execute pg_catalog.format($q$
        select pg_catalog.array_agg(e.id), pg_catalog.array_agg(e.value), pg_catalog.array_agg(e.properties),
               pg_catalog.array_agg(e.occurred_at)
        from meter.events e
        where (e.xid, e.id) >= (%L::xid8, %s::bigint) and e.customer_id = $1 and e.meter_id = $2
        $q$, v_wm_xid, v_wm_id)
      into v_ids, v_values, v_props, v_at
      using v_cid, v_m;
    -- ... and the cancellations of rolled-up events of the period the rollup has not subtracted
    -- yet: the pending cancellations first, few, then each one's event (a lateral lookup by id:
    -- as a join, the generic plan read the customer's month of events through (customer, meter,
    -- occurred_at) and probed each for a cancellation, 0.5 ms for 500 events)
    select pg_catalog.array_agg(e.value), pg_catalog.array_agg(e.properties), pg_catalog.array_agg(e.occurred_at)
      into v_c_vals, v_c_props, v_c_at
    from meter.event_cancellations x
    cross join lateral (select e.* from meter.events e where e.id = x.event_id offset 0) e
    where x.rolled_up_at is null and (e.xid, e.id) < (v_wm_xid, v_wm_id)
      and e.customer_id = v_cid and e.meter_id = v_m and e.occurred_at >= v_start and e.occurred_at < v_end;
    -- one list of what is pending in the period, once whatever the number of limits: the events
    -- past the watermark not cancelled (+1) and the pending cancellations (-1), each with its
    -- dimension values when a limit has a filter (under the meter version in force at its time)
    if v_ids is not null or v_c_vals is not null then
        select pg_catalog.array_agg(p.value), pg_catalog.array_agg(p.sign),
               pg_catalog.array_agg(case when v_filtered then coalesce(meter._dimension_values(p.properties,
                   (select mv.dimensions from meter.meter_versions mv
                    where mv.meter_id = v_m and mv.effective_from <= p.occurred_at
                    order by mv.effective_from desc limit 1)), '{}') end)
          into v_values, v_signs, v_dims
        from (select u.value, 1 as sign, u.properties, u.occurred_at
              from rows from (pg_catalog.unnest(v_ids), pg_catalog.unnest(v_values), pg_catalog.unnest(v_props),
                              pg_catalog.unnest(v_at)) as u(id, value, properties, occurred_at)
              where u.occurred_at >= v_start and u.occurred_at < v_end
                and not exists (select 1 from meter.event_cancellations x where x.event_id = u.id)
              union all
              select c.value, -1, c.properties, c.occurred_at
              from rows from (pg_catalog.unnest(v_c_vals), pg_catalog.unnest(v_c_props), pg_catalog.unnest(v_c_at))
                   as c(value, properties, occurred_at)) p;
    end if;

    -- 3. every limit: its period total so far, plus what is pending under its filter
    for v_l in select l.filter, l.quantity, coalesce(u.used, 0) as rolled
               from meter.plan_limits l
               left join meter.limit_usage u
                      on u.customer_id = v_cid and u.plan_id = l.plan_id and u.meter_id = l.meter_id
                     and u.filter = l.filter and u.period_start = v_start
               where l.plan_id = v_plan and l.meter_id = v_m
               order by l.filter = '{}' desc, l.filter
    loop
        v_used := v_l.rolled;
        if v_signs is not null then
            select coalesce(pg_catalog.sum(u.sign), 0), coalesce(pg_catalog.sum(u.sign * u.value), 0),
                   pg_catalog.max(u.value) filter (where u.sign > 0)
              into v_pn, v_pq, v_pmx
            from rows from (pg_catalog.unnest(v_values), pg_catalog.unnest(v_signs), pg_catalog.unnest(v_dims))
                 as u(value, sign, dims)
            where v_l.filter = '{}' or meter._dims_match(u.dims, v_l.filter);
            v_used := case v_agg when 'count' then v_used + v_pn
                                 when 'sum' then v_used + v_pq
                                 else greatest(v_used, coalesce(v_pmx, 0)) end;
        end if;
        period := v_period; filter := v_l.filter; limit_quantity := v_l.quantity;
        used := pg_catalog.trim_scale(v_used);
        remaining := pg_catalog.trim_scale(greatest(v_l.quantity - v_used, 0));
        applies := p_dimensions is null or v_l.filter = '{}' or meter._dims_match(p_dimensions, v_l.filter);
        allowed := case v_agg when 'max' then coalesce(p_quantity, 1) <= v_l.quantity
                              else v_used + coalesce(p_quantity, 1) <= v_l.quantity end;
        aggregation := v_agg;
        return next;
    end loop;
end;
$$;

comment on function meter.limit_check(text, text, jsonb, numeric) is
    'A customer''s usage against its plan''s limits on a meter in the open period (rollups plus what is not rolled up yet), and whether more is allowed.';
revoke all on function meter.limit_check(text, text, jsonb, numeric) from public;
grant execute on function meter.limit_check(text, text, jsonb, numeric) to meter_ingest, meter_analyst;
