-- meter.rollup_run(max_events): fold the events and cancellations not yet rolled up into
-- meter.rollup_hourly, once. Safe to call from psql at any time: `select * from meter.rollup_run();`
--
-- Guarantees
--   * One run at a time: a transaction-scoped advisory lock (hashtext('meter.rollup')). A second
--     caller does not wait: it returns ran = false and changes nothing.
--   * Exactly once, by construction: the folded rows and the new watermark are written by the same
--     transaction. A crash, a pg_terminate_backend or an error anywhere in the run rolls back both;
--     the next run starts from the old watermark.
--   * Nothing skipped, whatever the commit order. Events are taken in (xid, id) order, where xid is
--     the inserting transaction's id, and only below the horizon: the xmin of this run's snapshot,
--     i.e. the oldest transaction still running. Every transaction below it has finished, so no
--     event can ever appear behind the watermark. An event whose transaction took its id early
--     and commits late simply has an xid at or above the horizon until it commits: it waits for
--     a later run. (The price: one long-running transaction anywhere in the cluster holds the
--     horizon back; meter.rollup_lag names it.)
--   * A cancellation is subtracted once (rolled_up_at is set in this transaction), and only once
--     its event has been added (by this run or an earlier one), so no hour ever goes below what
--     its folded events justify. The max of an hour that lost an event is recomputed from raw
--     events, since a maximum cannot be subtracted.
--   * Late events (any past hour) update their hour like any other; the row's revision grows.
--
-- max_events bounds the events folded by one run (and so its duration and memory); more_pending
-- says when it stopped early. Hours are UTC hours of occurred_at.
create or replace function meter.rollup_run(p_max_events integer default 1000000)
returns meter.rollup_result
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
-- The hours of the changed rows travel as text (v_event_keys, v_cancel_keys) and are read back in
-- step 4: pin the output style too. Under the caller's DateStyle = SQL an hour would print as
-- 'MM/DD/YYYY ...', whose slashes break the 'customer/meter/hour' key (every run with a
-- cancellation failed with 22007, and the rollup stalled).
set datestyle = 'ISO, YMD'
set work_mem = '256MB'
-- JIT compilation costs ~0.4 s per run on large batches and saves less than that here.
set jit = off
as $$
declare
    v_started        timestamptz := pg_catalog.clock_timestamp();
    v_horizon        xid8;
    v_wm             meter.rollup_watermark;
    v_unique_meters  bigint[];
    v_events         bigint := 0;
    v_last_xid       xid8;
    v_last_id        bigint;
    v_pos_xid        xid8;
    v_pos_id         bigint;
    v_more           boolean := false;
    v_cancellations  bigint := 0;
    -- rollup rows changed, as 'customer_id/meter_id/hour' (hour printed in ISO style and UTC, this
    -- function's DateStyle and time zone, so that it reads back exactly)
    v_event_keys     text[];
    v_cancel_keys    text[];
    v_hours          bigint;
    v_ms             numeric;
begin
    if p_max_events is null or p_max_events < 1 then
        raise exception 'max_events must be a positive integer, got %', coalesce(p_max_events::text, 'null')
            using errcode = '22023';
    end if;

    if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('meter.rollup')) then
        return row(false, 0, 0, 0, null, null, null, false,
                   round(extract(epoch from pg_catalog.clock_timestamp() - v_started) * 1000, 3)
                  )::meter.rollup_result;
    end if;

    -- The horizon first, before this transaction takes an xid of its own.
    v_horizon := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
    select * into strict v_wm from meter.rollup_watermark where name = 'events' for update;

    -- Meters that count distinct values in some version: only their events' properties are read.
    select coalesce(pg_catalog.array_agg(distinct meter_id), '{}') into v_unique_meters
    from meter.meter_versions where aggregation = 'unique_count';

    -- 1. Events past the watermark and below the horizon, in (xid, id) order, at most max_events.
    -- For meters counting distinct values, the value of the unique_property of the version in
    -- force at the event's hour (a hash join with the few versions, not a lookup per event).
    with batch as materialized (
        select e.id, e.xid, e.customer_id, e.meter_id, e.hour, e.value,
               e.properties ->> uv.unique_property as unique_value
        from (
            select e.id, e.xid, e.customer_id, e.meter_id,
                   pg_catalog.date_trunc('hour', e.occurred_at) as hour,
                   e.value,
                   case when e.meter_id = any (v_unique_meters) then e.properties end as properties
            from meter.events e
            where (e.xid, e.id) >= (v_wm.position_xid, v_wm.position_id)
              and e.xid < v_horizon
            order by e.xid, e.id
            limit p_max_events
        ) e
        left join meter.meter_version_ranges uv
               on e.properties is not null
              and uv.meter_id = e.meter_id and uv.unique_property is not null
              and e.hour >= uv.effective_from and e.hour < uv.effective_until
    ),
    agg as (
        select b.customer_id, b.meter_id, b.hour, pg_catalog.count(*) as n, pg_catalog.sum(b.value) as q,
               pg_catalog.max(b.value) as mx
        from batch b
        group by b.customer_id, b.meter_id, b.hour
    ),
    hourly as (
        insert into meter.rollup_hourly as r
               (customer_id, meter_id, hour, event_count, quantity, max_value)
        select a.customer_id, a.meter_id, a.hour, a.n, a.q, a.mx
        from agg a
        on conflict (customer_id, meter_id, hour) do update
            set event_count = r.event_count + excluded.event_count,
                quantity    = r.quantity + excluded.quantity,
                max_value   = greatest(r.max_value, excluded.max_value),
                revision    = r.revision + 1,
                updated_at  = pg_catalog.now()
        returning r.customer_id, r.meter_id, r.hour
    ),
    uniques as (
        insert into meter.rollup_hourly_unique as u
               (customer_id, meter_id, hour, unique_value, event_count)
        select b.customer_id, b.meter_id, b.hour, b.unique_value, pg_catalog.count(*)
        from batch b
        where b.unique_value is not null
        group by 1, 2, 3, 4
        on conflict (customer_id, meter_id, hour, unique_value) do update
            set event_count = u.event_count + excluded.event_count
        returning 1
    ),
    -- (uniques is not read below: a data-modifying CTE runs to completion all the same)
    counted as (
        select coalesce(pg_catalog.sum(a.n), 0)::bigint as n from agg a
    ),
    -- where a full batch ends; only looked for when the batch is full (an initplan runs lazily)
    last as (
        select b.xid, b.id from batch b order by b.xid desc, b.id desc limit 1
    )
    select counted.n,
           (select pg_catalog.array_agg(h.customer_id || '/' || h.meter_id || '/' || h.hour) from hourly h),
           case when counted.n = p_max_events then (select l.xid from last l) end,
           case when counted.n = p_max_events then (select l.id from last l) end
      into v_events, v_event_keys, v_last_xid, v_last_id
    from counted;

    -- 2. The new watermark. A full batch ends right after its last event (the rest of that
    -- transaction's events, if any, have larger ids); a partial one means everything below the
    -- horizon is folded. Never backwards.
    if v_events = p_max_events then
        v_pos_xid := v_last_xid;
        v_pos_id  := v_last_id + 1;
        v_more    := true;
    else
        v_pos_xid := v_horizon;
        v_pos_id  := 0;
    end if;
    if (v_pos_xid, v_pos_id) < (v_wm.position_xid, v_wm.position_id) then
        v_pos_xid := v_wm.position_xid;
        v_pos_id  := v_wm.position_id;
    end if;

    -- 3. Cancellations whose event is folded (now or before) and that were not subtracted yet.
    with due as (
        update meter.event_cancellations c
        set rolled_up_at = pg_catalog.now()
        from meter.events e
        where c.rolled_up_at is null
          and e.id = c.event_id
          and (e.xid, e.id) < (v_pos_xid, v_pos_id)
        returning e.customer_id, e.meter_id, pg_catalog.date_trunc('hour', e.occurred_at) as hour,
                  e.value,
                  case when e.meter_id = any (v_unique_meters) then e.properties end as properties
    ),
    hourly as (
        update meter.rollup_hourly r
        set event_count = r.event_count - d.n,
            quantity    = r.quantity - d.q,
            revision    = r.revision + 1,
            updated_at  = pg_catalog.now()
        from (select customer_id, meter_id, hour, pg_catalog.count(*) as n, pg_catalog.sum(value) as q
              from due group by 1, 2, 3) d
        where r.customer_id = d.customer_id and r.meter_id = d.meter_id and r.hour = d.hour
        returning r.customer_id, r.meter_id, r.hour
    ),
    uniques as (
        update meter.rollup_hourly_unique u
        set event_count = u.event_count - d.n
        from (select du.customer_id, du.meter_id, du.hour, du.properties ->> uv.unique_property as unique_value,
                     pg_catalog.count(*) as n
              from due du
              join meter.meter_version_ranges uv
                on uv.meter_id = du.meter_id and uv.unique_property is not null
               and du.hour >= uv.effective_from and du.hour < uv.effective_until
              where du.properties is not null and du.properties ->> uv.unique_property is not null
              group by 1, 2, 3, 4) d
        where u.customer_id = d.customer_id and u.meter_id = d.meter_id and u.hour = d.hour
          and u.unique_value = d.unique_value
        returning 1
    )
    select (select pg_catalog.count(*) from due),
           (select pg_catalog.array_agg(h.customer_id || '/' || h.meter_id || '/' || h.hour) from hourly h)
      into v_cancellations, v_cancel_keys;

    -- 4. A cancelled event may have been its hour's maximum: recompute those hours' max from the
    -- events folded and not cancelled (this statement sees step 3's rolled_up_at).
    if v_cancellations > 0 then
        update meter.rollup_hourly r
        set max_value = (
            select pg_catalog.max(e.value)
            from meter.events e
            where e.customer_id = r.customer_id and e.meter_id = r.meter_id
              and e.occurred_at >= r.hour and e.occurred_at < r.hour + interval '1 hour'
              and (e.xid, e.id) < (v_pos_xid, v_pos_id)
              and not exists (select 1 from meter.event_cancellations c
                              where c.event_id = e.id and c.rolled_up_at is not null))
        from (select distinct pg_catalog.split_part(k, '/', 1)::bigint as customer_id,
                              pg_catalog.split_part(k, '/', 2)::bigint as meter_id,
                              pg_catalog.split_part(k, '/', 3)::timestamptz as hour
              from pg_catalog.unnest(v_cancel_keys) k) t
        where r.customer_id = t.customer_id and r.meter_id = t.meter_id and r.hour = t.hour;
    end if;

    -- 5. Move the watermark, in this same transaction.
    select pg_catalog.count(distinct k) into v_hours
    from pg_catalog.unnest(coalesce(v_event_keys, '{}') || coalesce(v_cancel_keys, '{}')) k;
    v_ms := round(extract(epoch from pg_catalog.clock_timestamp() - v_started) * 1000, 3);

    update meter.rollup_watermark
    set position_xid           = v_pos_xid,
        position_id            = v_pos_id,
        updated_at             = pg_catalog.now(),
        runs_total             = runs_total + 1,
        events_total           = events_total + v_events,
        cancellations_total    = cancellations_total + v_cancellations,
        last_run_at            = v_started,
        last_run_events        = v_events,
        last_run_cancellations = v_cancellations,
        last_run_hours         = v_hours,
        last_run_ms            = v_ms
    where name = 'events';

    return row(true, v_events, v_cancellations, v_hours, v_pos_xid, v_pos_id, v_horizon, v_more, v_ms)
        ::meter.rollup_result;
end;
$$;

comment on function meter.rollup_run(integer) is
    'Folds events and cancellations past the watermark into rollup_hourly, exactly once; one run at a time.';

revoke all on function meter.rollup_run(integer) from public;
