-- meter._rollup_fold(max_events, shard): one run of one rollup shard, for meter.rollup_run (whose
-- header is the contract: exactly once, the horizon, cancellations, the ledger, the period rows,
-- gauges, latest values, alerts). Folds the shard's batch and moves its watermark, in the caller's
-- transaction; returns the run's figures (result: ran = false when another run holds the shard,
-- or the shard does not exist (any more)) and the hours whose billing outbox revision must move
-- (outbox_*), which meter.rollup_run writes once for every shard it ran, in key order (step 4d).
--
-- How a run reads events (the hot path of a backlog): first the end of the batch, the
-- (max_events+1)-th pending event of the shard in (xid, id) order, from the (xid, id) index; then
-- one scan of [watermark, end) aggregated straight into per (customer, meter, hour, distinct value)
-- groups, with no ordering and nothing materialized per event.
create or replace function meter._rollup_fold(
    p_max_events integer,
    p_shard      integer,
    out result           meter.rollup_result,
    out outbox_customers bigint[],
    out outbox_meters    bigint[],
    out outbox_hours     timestamptz[],
    out outbox_revisions bigint[])
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
set work_mem = '256MB'
-- JIT compilation costs ~0.4 s per run on large batches and saves less than that here.
set jit = off
-- The planner cannot know that [watermark, end) holds at most max_events rows; it overestimates
-- the groups and sorts 1M rows for a GroupAggregate (measured: twice as slow as hashing). Hash
-- aggregation spills to disk when it must, so forbidding sorts here is safe.
set enable_sort = off
-- Every run is planned with its actual watermark and batch end: a generic plan cannot know that
-- the range is small (or large) and may pick a full scan of the events.
set plan_cache_mode = force_custom_plan
as $$
declare
    v_started        timestamptz := pg_catalog.clock_timestamp();
    v_horizon        xid8;
    v_wm             meter.rollup_watermark;
    v_unique_meters  bigint[];
    v_dim_meters     bigint[];
    v_prop_meters    bigint[];
    v_latest_meters  bigint[];
    v_tw_meters      bigint[];
    -- the ledger: the end of the latest closed period (no hour after it can be late), and the
    -- hash of '{}' (the dimension values of most rows), computed once
    v_closed_until   timestamptz;
    v_no_dims_hash   bytea := pg_catalog.sha256(pg_catalog.convert_to('{}', 'UTF8'));
    v_now_hour       timestamptz := pg_catalog.date_trunc('hour', pg_catalog.now());
    v_g_customers    bigint[];
    v_g_meters       bigint[];
    v_g_hours        timestamptz[];
    v_g_revisions    bigint[];
    v_events         bigint := 0;
    v_end_xid        xid8;
    v_end_id         bigint;
    v_more           boolean := false;
    v_cancellations  bigint := 0;
    -- the rollup rows changed, as three parallel arrays (customer, meter, hour)
    v_customers      bigint[];
    v_meters         bigint[];
    v_hours_changed  timestamptz[];
    v_revisions      bigint[];
    v_c_customers    bigint[];
    v_c_meters       bigint[];
    v_c_hours        timestamptz[];
    v_hours          bigint;
    v_c_revisions    bigint[];
    v_l_customers    bigint[];
    v_l_meters       bigint[];
    v_l_hours        timestamptz[];
    v_ms             numeric;
    v_r_end_xid      xid8;
    v_r_end_id       bigint;
    v_redeliveries   bigint := 0;
    v_shards         integer;
    -- a step's ledger rows, for meter._rollup_ledger_add
    v_lg_customers   bigint[];
    v_lg_meters      bigint[];
    v_lg_hours       timestamptz[];
    v_lg_dims_hashes bytea[];
    v_lg_dims        jsonb[];
    v_lg_n           bigint[];
    v_lg_late        bigint[];
    v_lg_values      numeric[];
    v_lg_checksums   numeric[];
begin
    -- (meter.rollup_run has checked max_events and the shard number)
    -- The design needs a fresh snapshot per statement (the meter versions and cancellations read
    -- after the lock must be the latest): READ COMMITTED, Postgres' default.
    if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
        raise exception 'meter.rollup_run() must run in a READ COMMITTED transaction, not %',
            pg_catalog.current_setting('transaction_isolation')
            using errcode = '0A000',
                  hint = 'call it outside an explicit REPEATABLE READ/SERIALIZABLE transaction, and check default_transaction_isolation';
    end if;

    -- The rollup's lock, shared by the runs of every shard (what must exclude all runs, such as
    -- meter_upsert, period_close or rollup_period_rebuild, takes it exclusively), and the shard's
    -- own: one run per shard at a time.
    if not pg_catalog.pg_try_advisory_xact_lock_shared(pg_catalog.hashtext('meter.rollup'))
       or not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'), p_shard) then
        result := row(false, 0, 0, 0, null, null, null, false,
                      round(extract(epoch from pg_catalog.clock_timestamp() - v_started) * 1000, 3)
                     )::meter.rollup_result;
        return;
    end if;

    -- The horizon first, before this transaction takes an xid of its own.
    v_horizon := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
    select * into v_wm from meter.rollup_watermark where shard = p_shard for update;
    if not found then
        -- (no such shard, or no more: the count changed since the caller read it)
        result := row(false, 0, 0, 0, null, null, null, false,
                      round(extract(epoch from pg_catalog.clock_timestamp() - v_started) * 1000, 3)
                     )::meter.rollup_result;
        return;
    end if;
    -- (one shard: the filters on customer_id % v_shards below fold away in each run's own plan)
    v_shards := v_wm.shard_count;

    -- 1. Where this batch ends: at the first pending event beyond max_events, or else at the
    -- horizon (everything below it is folded). The batch is [watermark, end) in (xid, id) order.
    select e.xid, e.id into v_end_xid, v_end_id
    from meter.events e
    where (e.xid, e.id) >= (v_wm.position_xid, v_wm.position_id)
      and e.xid < v_horizon
      and (v_shards = 1 or e.customer_id % v_shards = p_shard)
    order by e.xid, e.id
    offset p_max_events
    limit 1;
    if found then
        v_more := true;
    else
        v_end_xid := v_horizon;
        v_end_id  := 0;
    end if;
    -- Never backwards. In a healthy cluster the horizon only grows, so a watermark ahead of it
    -- means transaction ids from another cluster (a restore, a move): stop loudly rather than
    -- skip the events this cluster writes below it.
    if (v_end_xid, v_end_id) < (v_wm.position_xid, v_wm.position_id) then
        raise exception 'the rollup watermark (%/%) is ahead of this cluster''s oldest running transaction (%)',
            v_wm.position_xid, v_wm.position_id, v_horizon
            using errcode = '55000',
                  hint = 'the database was restored or moved from another cluster: run select meter.rollup_rebase(); (docs/runbook.md)';
    end if;

    -- Meters that count distinct values in some version: only their events' properties are read.
    select coalesce(pg_catalog.array_agg(distinct meter_id), '{}') into v_unique_meters
    from meter.meter_versions where aggregation = 'unique_count';
    -- Meters with dimensions in some version: their events' properties are read too.
    select coalesce(pg_catalog.array_agg(distinct meter_id), '{}') into v_dim_meters
    from meter.meter_versions where pg_catalog.cardinality(dimensions) > 0;
    v_prop_meters := v_unique_meters || v_dim_meters;
    -- Meters with a latest version: step 4a' reads the last event of the hours touched.
    select coalesce(pg_catalog.array_agg(distinct meter_id), '{}') into v_latest_meters
    from meter.meter_versions where aggregation = 'latest';
    -- Time-weighted gauges: their events add no quantity (step 4a integrates it).
    select coalesce(pg_catalog.array_agg(distinct meter_id), '{}') into v_tw_meters
    from meter.meter_versions where aggregation = 'time_weighted_sum';
    select coalesce(pg_catalog.max(i.period_end), '-infinity') into v_closed_until from meter.invoices i;

    -- 2. Fold the batch. One aggregation into (customer, meter, hour, distinct value, dimension
    -- values) groups: for meters counting distinct values, the value of the unique_property of the
    -- version in force at the event's hour (a hash join with the few versions), null otherwise; for
    -- meters with dimensions, the event's values of that version's dimensions, null otherwise.
    -- Hourly rows, distinct values and dimension rows are then written from these groups.
    with fine as materialized (
        select b.customer_id, b.meter_id, b.hour,
               b.properties ->> uv.unique_property as unique_value,
               -- the values as a text[] (cheap to hash: grouping by the jsonb object per event was 20
               -- times slower); the dims CTE names them once per group (meter._dimension_values'
               -- object, built by meter._dimension_object)
               case when pg_catalog.cardinality(uv.dimensions) > 0
                    then array[b.properties ->> uv.dimensions[1], b.properties ->> uv.dimensions[2],
                               b.properties ->> uv.dimensions[3]] end as dvals,
               pg_catalog.count(*) as n, pg_catalog.sum(b.qv) as q, pg_catalog.max(b.value) as mx,
               -- (the ledger's: Σ value as sent, and the checksum of the keys)
               pg_catalog.sum(b.value) as vin, pg_catalog.sum(pg_catalog.hashtextextended(b.idempotency_key, 0)) as kh
        from (
            select e.customer_id, e.meter_id,
                   pg_catalog.date_bin(interval '1 hour', e.occurred_at, timestamptz '2000-01-01 00:00:00+00') as hour,
                   e.value, e.idempotency_key,
                   case when e.meter_id = any (v_tw_meters) then 0 else e.value end as qv,
                   case when e.meter_id = any (v_prop_meters) then e.properties end as properties
            from meter.events e
            where (e.xid, e.id) >= (v_wm.position_xid, v_wm.position_id)
              and (e.xid, e.id) < (v_end_xid, v_end_id)
              and (v_shards = 1 or e.customer_id % v_shards = p_shard)
        ) b
        left join meter.meter_version_ranges uv
               on b.properties is not null
              and uv.meter_id = b.meter_id
              and (uv.unique_property is not null or pg_catalog.cardinality(uv.dimensions) > 0)
              and b.hour >= uv.effective_from and b.hour < uv.effective_until
        group by 1, 2, 3, 4, 5
    ),
    hourly as (
        insert into meter.rollup_hourly as r
               (customer_id, meter_id, hour, event_count, quantity, max_value)
        select f.customer_id, f.meter_id, f.hour, pg_catalog.sum(f.n), pg_catalog.sum(f.q), pg_catalog.max(f.mx)
        from fine f
        group by f.customer_id, f.meter_id, f.hour
        on conflict (customer_id, meter_id, hour) do update
            set event_count = r.event_count + excluded.event_count,
                quantity    = r.quantity + excluded.quantity,
                max_value   = greatest(r.max_value, excluded.max_value),
                revision    = r.revision + 1,
                updated_at  = pg_catalog.now()
        returning r.customer_id, r.meter_id, r.hour, r.revision
    ),
    uniques as (
        insert into meter.rollup_hourly_unique as u
               (customer_id, meter_id, hour, value_hash, unique_value, event_count)
        select f.customer_id, f.meter_id, f.hour, pg_catalog.sha256(pg_catalog.convert_to(f.unique_value, 'UTF8')),
               f.unique_value, pg_catalog.sum(f.n)
        from fine f
        where f.unique_value is not null
        group by f.customer_id, f.meter_id, f.hour, f.unique_value
        on conflict (customer_id, meter_id, hour, value_hash) do update
            set event_count = u.event_count + excluded.event_count
        returning 1
    ),
    dim_groups as (
        select g.*, pg_catalog.sha256(pg_catalog.convert_to(g.dims::text, 'UTF8')) as dims_hash
        from (select f.customer_id, f.meter_id, f.hour, meter._dimension_object(dv.dimensions, f.dvals) as dims,
                     pg_catalog.sum(f.n) as n, pg_catalog.sum(f.q) as q, pg_catalog.max(f.mx) as mx,
                     pg_catalog.sum(f.vin) as vin, pg_catalog.sum(f.kh) as kh
              from fine f
              join meter.meter_version_ranges dv
                on dv.meter_id = f.meter_id and f.hour >= dv.effective_from and f.hour < dv.effective_until
              where f.dvals is not null
              group by f.customer_id, f.meter_id, f.hour, dv.dimensions, f.dvals) g
    ),
    dims as (
        insert into meter.rollup_hourly_dims as x
               (customer_id, meter_id, hour, dims_hash, dims, event_count, quantity, max_value)
        select g.customer_id, g.meter_id, g.hour, g.dims_hash, g.dims, g.n, g.q, g.mx
        from dim_groups g
        on conflict (customer_id, meter_id, hour, dims_hash) do update
            set event_count = x.event_count + excluded.event_count,
                quantity    = x.quantity + excluded.quantity,
                max_value   = greatest(x.max_value, excluded.max_value),
                updated_at  = pg_catalog.now()
        returning 1
    ),
    -- the same groups added to their billing period's totals (gauges excepted: their hours are
    -- integrated in step 4a, not folded)
    period as (
        insert into meter.rollup_period as p (customer_id, meter_id, period_start, event_count, quantity, max_value)
        select f.customer_id, f.meter_id, meter._period_of(c.billing_timezone, f.hour),
               pg_catalog.sum(f.n), pg_catalog.sum(f.q), pg_catalog.max(f.mx)
        from fine f
        join meter.customers c on c.id = f.customer_id
        where not (f.meter_id = any (v_tw_meters))
        group by 1, 2, 3
        on conflict (customer_id, meter_id, period_start) do update
            set event_count = p.event_count + excluded.event_count,
                quantity    = p.quantity + excluded.quantity,
                max_value   = greatest(p.max_value, excluded.max_value),
                updated_at  = pg_catalog.now()
        returning 1
    ),
    period_dims as (
        insert into meter.rollup_period_dims as p
               (customer_id, meter_id, period_start, dims_hash, dims, event_count, quantity, max_value)
        select g.customer_id, g.meter_id, meter._period_of(c.billing_timezone, g.hour), g.dims_hash, pg_catalog.min(g.dims::text)::jsonb,
               pg_catalog.sum(g.n), pg_catalog.sum(g.q), pg_catalog.max(g.mx)
        from dim_groups g
        join meter.customers c on c.id = g.customer_id
        where not (g.meter_id = any (v_tw_meters))
        group by 1, 2, 3, 4
        on conflict (customer_id, meter_id, period_start, dims_hash) do update
            set event_count = p.event_count + excluded.event_count,
                quantity    = p.quantity + excluded.quantity,
                max_value   = greatest(p.max_value, excluded.max_value),
                updated_at  = pg_catalog.now()
        returning 1
    ),
    -- the ledger: the same events counted per hour and dimension values ('{}' under a version
    -- without dimensions); late when the customer's invoice for the hour's period is closed
    ledger_rows as materialized (
        select g.customer_id, g.meter_id, g.hour, g.dims_hash, g.dims, g.n,
               case when g.hour < v_closed_until
                         and exists (select 1 from meter.invoices i
                                     where i.customer_id = g.customer_id and g.hour >= i.period_start and g.hour < i.period_end)
                    then g.n else 0 end as late,
               g.vin, g.kh
        -- (the groups without dimension values as they are, those with them as step 2 wrote them
        -- to rollup_hourly_dims: no second join with the meter versions)
        from (select f.customer_id, f.meter_id, f.hour, v_no_dims_hash as dims_hash, '{}'::jsonb as dims,
                     pg_catalog.sum(f.n) as n, pg_catalog.sum(f.vin) as vin, pg_catalog.sum(f.kh) as kh
              from fine f
              where f.dvals is null
              group by 1, 2, 3
              union all
              select d.customer_id, d.meter_id, d.hour, d.dims_hash, d.dims, d.n, d.vin, d.kh
              from dim_groups d) g
    )
    -- (uniques, dims and the period totals are not read below: a data-modifying CTE runs to
    -- completion all the same; the ledger's rows go to meter._rollup_ledger_add just after)
    select (select coalesce(pg_catalog.sum(f.n), 0)::bigint from fine f), hh.*, lr.*
      into v_events, v_customers, v_meters, v_hours_changed, v_revisions,
           v_lg_customers, v_lg_meters, v_lg_hours, v_lg_dims_hashes, v_lg_dims, v_lg_n, v_lg_late, v_lg_values, v_lg_checksums
    from (select pg_catalog.array_agg(h.customer_id), pg_catalog.array_agg(h.meter_id), pg_catalog.array_agg(h.hour),
                 pg_catalog.array_agg(h.revision)
          from hourly h) hh,
         (select pg_catalog.array_agg(g.customer_id), pg_catalog.array_agg(g.meter_id), pg_catalog.array_agg(g.hour),
                 pg_catalog.array_agg(g.dims_hash), pg_catalog.array_agg(g.dims), pg_catalog.array_agg(g.n::bigint),
                 pg_catalog.array_agg(g.late::bigint), pg_catalog.array_agg(g.vin), pg_catalog.array_agg(g.kh)
          from ledger_rows g) lr;
    -- ... counted in the ledger, by the hour and by the billing period
    perform meter._rollup_ledger_add(v_lg_customers, v_lg_meters, v_lg_hours, v_lg_dims_hashes, v_lg_dims,
                                     v_lg_n, null, null, v_lg_late, v_lg_values, null, v_lg_checksums);
    -- (every billed hour changed gets its new revision in the outbox at step 4d, with the hours
    -- of the steps below, in one statement)

    -- 3. Cancellations whose event is folded (now or before) and that were not subtracted yet.
    with due as (
        update meter.event_cancellations c
        set rolled_up_at = pg_catalog.now()
        from meter.events e
        where c.rolled_up_at is null
          and e.id = c.event_id
          and (e.xid, e.id) < (v_end_xid, v_end_id)
          and (v_shards = 1 or e.customer_id % v_shards = p_shard)
        returning e.customer_id, e.meter_id,
                  pg_catalog.date_bin(interval '1 hour', e.occurred_at, timestamptz '2000-01-01 00:00:00+00') as hour,
                  e.value, e.idempotency_key,
                  case when e.meter_id = any (v_prop_meters) then e.properties end as properties
    ),
    hourly as (
        update meter.rollup_hourly r
        set event_count = r.event_count - d.n,
            quantity    = r.quantity - d.q,
            revision    = r.revision + 1,
            updated_at  = pg_catalog.now()
        from (select customer_id, meter_id, hour, pg_catalog.count(*) as n,
                     pg_catalog.sum(case when meter_id = any (v_tw_meters) then 0 else value end) as q
              from due group by 1, 2, 3) d
        where r.customer_id = d.customer_id and r.meter_id = d.meter_id and r.hour = d.hour
        returning r.customer_id, r.meter_id, r.hour, r.revision
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
          and u.value_hash = pg_catalog.sha256(pg_catalog.convert_to(d.unique_value, 'UTF8'))
        returning 1
    ),
    -- (each cancelled event with its dimension values and billing period: few rows)
    due_dims as (
        select du.customer_id, du.meter_id, du.hour, du.value, du.idempotency_key,
               meter._period_of(c.billing_timezone, du.hour) as period_start,
               case when dv.meter_id is not null then meter._dimension_values(du.properties, dv.dimensions) end as dims
        from due du
        join meter.customers c on c.id = du.customer_id
        left join meter.meter_version_ranges dv
          on du.properties is not null
         and dv.meter_id = du.meter_id and pg_catalog.cardinality(dv.dimensions) > 0
         and du.hour >= dv.effective_from and du.hour < dv.effective_until
    ),
    dims as (
        update meter.rollup_hourly_dims x
        set event_count = x.event_count - d.n,
            quantity    = x.quantity - d.q,
            updated_at  = pg_catalog.now()
        from (select du.customer_id, du.meter_id, du.hour, du.dims,
                     pg_catalog.count(*) as n,
                     pg_catalog.sum(case when du.meter_id = any (v_tw_meters) then 0 else du.value end) as q
              from due_dims du
              where du.dims is not null
              group by 1, 2, 3, 4) d
        where x.customer_id = d.customer_id and x.meter_id = d.meter_id and x.hour = d.hour
          and x.dims_hash = pg_catalog.sha256(pg_catalog.convert_to(d.dims::text, 'UTF8'))
        returning 1
    ),
    -- ... and from their billing period's totals (gauges excepted, as in step 2)
    period as (
        update meter.rollup_period p
        set event_count = p.event_count - d.n,
            quantity    = p.quantity - d.q,
            updated_at  = pg_catalog.now()
        from (select du.customer_id, du.meter_id, du.period_start, pg_catalog.count(*) as n, pg_catalog.sum(du.value) as q
              from due_dims du
              where not (du.meter_id = any (v_tw_meters))
              group by 1, 2, 3) d
        where p.customer_id = d.customer_id and p.meter_id = d.meter_id and p.period_start = d.period_start
        returning 1
    ),
    period_dims as (
        update meter.rollup_period_dims p
        set event_count = p.event_count - d.n,
            quantity    = p.quantity - d.q,
            updated_at  = pg_catalog.now()
        from (select du.customer_id, du.meter_id, du.period_start, du.dims, pg_catalog.count(*) as n, pg_catalog.sum(du.value) as q
              from due_dims du
              where du.dims is not null and not (du.meter_id = any (v_tw_meters))
              group by 1, 2, 3, 4) d
        where p.customer_id = d.customer_id and p.meter_id = d.meter_id and p.period_start = d.period_start
          and p.dims_hash = pg_catalog.sha256(pg_catalog.convert_to(d.dims::text, 'UTF8'))
        returning 1
    ),
    -- ... and counted in the ledger (late when the hour's period is closed)
    ledger_rows as materialized (
        select d.customer_id, d.meter_id, d.hour,
               case when d.dims = '{}'::jsonb then v_no_dims_hash else pg_catalog.sha256(pg_catalog.convert_to(d.dims::text, 'UTF8')) end
                   as dims_hash,
               d.dims, d.n,
               case when d.hour < v_closed_until
                         and exists (select 1 from meter.invoices i
                                     where i.customer_id = d.customer_id and d.hour >= i.period_start and d.hour < i.period_end)
                    then d.n else 0 end as late,
               d.v, -d.kh as kh
        from (select du.customer_id, du.meter_id, du.hour, coalesce(du.dims, '{}'::jsonb) as dims,
                     pg_catalog.count(*) as n, pg_catalog.sum(du.value) as v,
                     pg_catalog.sum(pg_catalog.hashtextextended(du.idempotency_key, 0)) as kh
              from due_dims du
              group by 1, 2, 3, 4) d
    )
    select (select pg_catalog.count(*) from due), hh.*, lr.*
      into v_cancellations, v_c_customers, v_c_meters, v_c_hours, v_c_revisions,
           v_lg_customers, v_lg_meters, v_lg_hours, v_lg_dims_hashes, v_lg_dims, v_lg_n, v_lg_late, v_lg_values, v_lg_checksums
    from (select pg_catalog.array_agg(h.customer_id), pg_catalog.array_agg(h.meter_id), pg_catalog.array_agg(h.hour),
                 pg_catalog.array_agg(h.revision)
          from hourly h) hh,
         (select pg_catalog.array_agg(d.customer_id), pg_catalog.array_agg(d.meter_id), pg_catalog.array_agg(d.hour),
                 pg_catalog.array_agg(d.dims_hash), pg_catalog.array_agg(d.dims), pg_catalog.array_agg(d.n::bigint),
                 pg_catalog.array_agg(d.late::bigint), pg_catalog.array_agg(d.v), pg_catalog.array_agg(d.kh)
          from ledger_rows d) lr;
    perform meter._rollup_ledger_add(v_lg_customers, v_lg_meters, v_lg_hours, v_lg_dims_hashes, v_lg_dims,
                                     null, v_lg_n, null, v_lg_late, null, v_lg_values, v_lg_checksums);

    -- 3b. Redeliveries acknowledged as duplicates, counted in the ledger under their event's hour
    -- and dimension values: those recorded since the last run, in (xid, id) order below the
    -- horizon (a transaction still running records them later, above the position), at most
    -- max_events of them. A redelivery whose event is no longer stored (an archived month) is
    -- passed over: its month is closed, signed off and archived.
    select r.xid, r.id into v_r_end_xid, v_r_end_id
    from meter.event_redeliveries r
    where (r.xid, r.id) >= (v_wm.redeliveries_xid, v_wm.redeliveries_id)
      and r.xid < v_horizon
      and (v_shards = 1 or r.customer_id % v_shards = p_shard)
    order by r.xid, r.id
    offset p_max_events
    limit 1;
    if found then
        v_more := true;
    else
        v_r_end_xid := v_horizon;
        v_r_end_id  := 0;
    end if;
    if (v_r_end_xid, v_r_end_id) < (v_wm.redeliveries_xid, v_wm.redeliveries_id) then
        raise exception 'the redeliveries position (%/%) is ahead of this cluster''s oldest running transaction (%)',
            v_wm.redeliveries_xid, v_wm.redeliveries_id, v_horizon
            using errcode = '55000',
                  hint = 'the database was restored or moved from another cluster: run select meter.rollup_rebase(); (docs/runbook.md)';
    end if;
    with batch as (
        select r.event_id, r.occurred_at, r.verdict
        from meter.event_redeliveries r
        where (r.xid, r.id) >= (v_wm.redeliveries_xid, v_wm.redeliveries_id)
          and (r.xid, r.id) < (v_r_end_xid, v_r_end_id)
          and (v_shards = 1 or r.customer_id % v_shards = p_shard)
    ),
    dup_rows as materialized (
        select d.customer_id, d.meter_id, d.hour, pg_catalog.sha256(pg_catalog.convert_to(d.dims::text, 'UTF8')) as dims_hash,
               d.dims, d.n
        from (select e.customer_id, e.meter_id, x.hour,
                     case when dv.meter_id is not null then meter._dimension_values(e.properties, dv.dimensions)
                          else '{}'::jsonb end as dims,
                     pg_catalog.count(*) as n
              from batch b
              -- (by (id, occurred_at): the event's partition; a row recorded without its time, by an
              -- ingest still on the functions before 0023, finds its event by id in every partition)
              join lateral (select e1.customer_id, e1.meter_id, e1.occurred_at, e1.properties from meter.events e1
                            where b.occurred_at is not null and e1.id = b.event_id and e1.occurred_at = b.occurred_at
                            union all
                            select e2.customer_id, e2.meter_id, e2.occurred_at, e2.properties from meter.events e2
                            where b.occurred_at is null and e2.id = b.event_id) e on true
              cross join lateral (select pg_catalog.date_bin(interval '1 hour', e.occurred_at,
                                                             timestamptz '2000-01-01 00:00:00+00') as hour) x
              left join meter.meter_version_ranges dv
                on dv.meter_id = e.meter_id and pg_catalog.cardinality(dv.dimensions) > 0
               and x.hour >= dv.effective_from and x.hour < dv.effective_until
              where b.verdict = 'duplicate'
              group by 1, 2, 3, 4) d
    )
    select (select pg_catalog.count(*) from batch), lr.*
      into v_redeliveries, v_lg_customers, v_lg_meters, v_lg_hours, v_lg_dims_hashes, v_lg_dims, v_lg_n
    from (select pg_catalog.array_agg(d.customer_id), pg_catalog.array_agg(d.meter_id), pg_catalog.array_agg(d.hour),
                 pg_catalog.array_agg(d.dims_hash), pg_catalog.array_agg(d.dims), pg_catalog.array_agg(d.n::bigint)
          from dup_rows d) lr;
    perform meter._rollup_ledger_add(v_lg_customers, v_lg_meters, v_lg_hours, v_lg_dims_hashes, v_lg_dims,
                                     null, null, v_lg_n, null, null, null, null);

    -- 4. A cancelled event may have been its hour's maximum: recompute those hours' max from the
    -- events folded and not cancelled (this statement sees step 3's rolled_up_at).
    if v_cancellations > 0 then
        update meter.rollup_hourly r
        set max_value = (
            select pg_catalog.max(e.value)
            from meter.events e
            where e.customer_id = r.customer_id and e.meter_id = r.meter_id
              and e.occurred_at >= r.hour and e.occurred_at < r.hour + interval '1 hour'
              and (e.xid, e.id) < (v_end_xid, v_end_id)
              and not exists (select 1 from meter.event_cancellations c
                              where c.event_id = e.id and c.rolled_up_at is not null))
        from (select distinct k.customer_id, k.meter_id, k.hour
              from rows from (pg_catalog.unnest(v_c_customers), pg_catalog.unnest(v_c_meters),
                              pg_catalog.unnest(v_c_hours)) as k(customer_id, meter_id, hour)) t
        where r.customer_id = t.customer_id and r.meter_id = t.meter_id and r.hour = t.hour;
        -- ... and the same per dimension values, for the meters that have them.
        update meter.rollup_hourly_dims x
        set max_value = (
            select pg_catalog.max(e.value)
            from meter.events e
            where e.customer_id = x.customer_id and e.meter_id = x.meter_id
              and e.occurred_at >= x.hour and e.occurred_at < x.hour + interval '1 hour'
              and (e.xid, e.id) < (v_end_xid, v_end_id)
              and meter._dimension_values(e.properties, dv.dimensions) = x.dims
              and not exists (select 1 from meter.event_cancellations c
                              where c.event_id = e.id and c.rolled_up_at is not null))
        from (select distinct k.customer_id, k.meter_id, k.hour
              from rows from (pg_catalog.unnest(v_c_customers), pg_catalog.unnest(v_c_meters),
                              pg_catalog.unnest(v_c_hours)) as k(customer_id, meter_id, hour)
              where k.meter_id = any (v_dim_meters)) t,
             meter.meter_version_ranges dv
        where x.customer_id = t.customer_id and x.meter_id = t.meter_id and x.hour = t.hour
          and dv.meter_id = x.meter_id and x.hour >= dv.effective_from and x.hour < dv.effective_until;
        -- ... and the maxima of those hours' billing periods, from their hours (gauges excepted)
        with touched as (
            select distinct k.customer_id, k.meter_id, meter._period_of(c.billing_timezone, k.hour) as period_start,
                   c.billing_timezone as tz
            from rows from (pg_catalog.unnest(v_c_customers), pg_catalog.unnest(v_c_meters),
                            pg_catalog.unnest(v_c_hours)) as k(customer_id, meter_id, hour)
            join meter.customers c on c.id = k.customer_id
            where not (k.meter_id = any (v_tw_meters))
        ),
        whole as (
            update meter.rollup_period p
            set max_value = (
                select pg_catalog.max(r.max_value) filter (where r.event_count > 0)
                from meter.rollup_hourly r
                where r.customer_id = p.customer_id and r.meter_id = p.meter_id
                  and r.hour >= p.period_start
                  and r.hour < ((p.period_start at time zone t.tz) + interval '1 month') at time zone t.tz)
            from touched t
            where p.customer_id = t.customer_id and p.meter_id = t.meter_id and p.period_start = t.period_start
            returning 1
        )
        update meter.rollup_period_dims p
        set max_value = (
            select pg_catalog.max(x.max_value) filter (where x.event_count > 0)
            from meter.rollup_hourly_dims x
            where x.customer_id = p.customer_id and x.meter_id = p.meter_id and x.dims_hash = p.dims_hash
              and x.hour >= p.period_start
              and x.hour < ((p.period_start at time zone t.tz) + interval '1 month') at time zone t.tz)
        from touched t
        where p.customer_id = t.customer_id and p.meter_id = t.meter_id and p.period_start = t.period_start
          and t.meter_id = any (v_dim_meters);
    end if;

    -- 4a'. Latest meters: the last event of every hour this run touched (events folded or
    -- cancelled), from raw events (an ordered aggregate in the fold would force a sort of the whole
    -- batch; these hours are few and read by index). Null when the hour has no event left.
    if pg_catalog.cardinality(v_latest_meters) > 0 then
        update meter.rollup_hourly r
        set (latest_at, latest_key, latest_value) = (
            select e.occurred_at, e.idempotency_key, e.value
            from meter.events e
            where e.customer_id = r.customer_id and e.meter_id = r.meter_id
              and e.occurred_at >= r.hour and e.occurred_at < r.hour + interval '1 hour'
              and (e.xid, e.id) < (v_end_xid, v_end_id)
              and not exists (select 1 from meter.event_cancellations c
                              where c.event_id = e.id and c.rolled_up_at is not null)
            order by e.occurred_at desc, e.idempotency_key collate "C" desc
            limit 1)
        from (select distinct k.c as customer_id, k.m as meter_id, k.h as hour
              from rows from (pg_catalog.unnest(coalesce(v_customers, '{}') || coalesce(v_c_customers, '{}')),
                              pg_catalog.unnest(coalesce(v_meters, '{}') || coalesce(v_c_meters, '{}')),
                              pg_catalog.unnest(coalesce(v_hours_changed, '{}') || coalesce(v_c_hours, '{}'))) as k(c, m, h)
              where k.m = any (v_latest_meters)) t
        where r.customer_id = t.customer_id and r.meter_id = t.meter_id and r.hour = t.hour;
    end if;

    -- 4a. Time-weighted gauges: each series touched by this run is recomputed from the earliest
    -- hour touched, and every series behind the last complete hour is extended to it; only
    -- complete hours are written (the current one is integrated once it has ended). An hour
    -- whose quantity changes gets a new revision; an existing hour that no longer holds anything
    -- goes to 0; a new hour holding 0 is not written.
    if pg_catalog.cardinality(v_tw_meters) > 0 then
        with touched as (
            select k.c, k.m, pg_catalog.min(k.h) as h
            from rows from (pg_catalog.unnest(coalesce(v_customers, '{}') || coalesce(v_c_customers, '{}')),
                            pg_catalog.unnest(coalesce(v_meters, '{}') || coalesce(v_c_meters, '{}')),
                            pg_catalog.unnest(coalesce(v_hours_changed, '{}') || coalesce(v_c_hours, '{}'))) as k(c, m, h)
            where k.m = any (v_tw_meters)
            group by k.c, k.m
        ),
        due as (
            select coalesce(t.c, g.customer_id) as c, coalesce(t.m, g.meter_id) as m,
                   least(t.h, g.accrued_until) as from_h
            from touched t
            -- (the series of this shard's customers)
            full join (select * from meter.gauge_series s where (v_shards = 1 or s.customer_id % v_shards = p_shard)) g
                   on g.customer_id = t.c and g.meter_id = t.m
            where t.c is not null or g.accrued_until < v_now_hour
        ),
        -- (a gauge with dimensions: one series per combination of values, meter._gauge_dims_hours;
        -- the hour's total is their sum, and each combination's hour is its dimension row)
        computed_dims as materialized (
            select d.c, d.m, q.hour, q.dims, q.quantity
            from due d
            cross join lateral meter._gauge_dims_hours(d.c, d.m, d.from_h, v_now_hour, v_end_xid, v_end_id) q
            where d.from_h < v_now_hour and d.m = any (v_dim_meters)
        ),
        computed as materialized (
            select d.c, d.m, q.hour, q.quantity
            from due d
            cross join lateral meter._gauge_hours(d.c, d.m, d.from_h, v_now_hour, v_end_xid, v_end_id) q
            where d.from_h < v_now_hour and not (d.m = any (v_dim_meters))
            union all
            select x.c, x.m, x.hour, pg_catalog.sum(x.quantity) from computed_dims x group by x.c, x.m, x.hour
        ),
        target as (
            select c.c, c.m, c.hour, c.quantity from computed c
            where c.quantity <> 0
               or exists (select 1 from meter.rollup_hourly r where r.customer_id = c.c and r.meter_id = c.m and r.hour = c.hour)
            union all
            select r.customer_id, r.meter_id, r.hour, 0
            from meter.rollup_hourly r join due d on r.customer_id = d.c and r.meter_id = d.m
            where r.hour >= d.from_h and r.hour < v_now_hour and r.quantity <> 0
              and not exists (select 1 from computed c where c.c = r.customer_id and c.m = r.meter_id and c.hour = r.hour)
        ),
        written as (
            insert into meter.rollup_hourly as r (customer_id, meter_id, hour, event_count, quantity)
            select t.c, t.m, t.hour, 0, t.quantity from target t
            on conflict (customer_id, meter_id, hour) do update
                set quantity = excluded.quantity, revision = r.revision + 1, updated_at = pg_catalog.now()
                where r.quantity is distinct from excluded.quantity
            returning r.customer_id, r.meter_id, r.hour, r.revision
        ),
        dims_target as (
            select x.c, x.m, x.hour, x.dims, x.quantity from computed_dims x
            where x.quantity <> 0
               or exists (select 1 from meter.rollup_hourly_dims r
                          where r.customer_id = x.c and r.meter_id = x.m and r.hour = x.hour and r.dims = x.dims)
            union all
            select r.customer_id, r.meter_id, r.hour, r.dims, 0
            from meter.rollup_hourly_dims r join due d on r.customer_id = d.c and r.meter_id = d.m
            where d.m = any (v_dim_meters) and r.hour >= d.from_h and r.hour < v_now_hour and r.quantity <> 0
              and not exists (select 1 from computed_dims x
                              where x.c = r.customer_id and x.m = r.meter_id and x.hour = r.hour and x.dims = r.dims)
        ),
        dims_written as (
            insert into meter.rollup_hourly_dims as x (customer_id, meter_id, hour, dims_hash, dims, event_count, quantity)
            select t.c, t.m, t.hour, pg_catalog.sha256(pg_catalog.convert_to(t.dims::text, 'UTF8')), t.dims, 0, t.quantity
            from dims_target t
            on conflict (customer_id, meter_id, hour, dims_hash) do update
                set quantity = excluded.quantity, updated_at = pg_catalog.now()
                where x.quantity is distinct from excluded.quantity
            returning 1
        ),
        series as (
            insert into meter.gauge_series as g (customer_id, meter_id, accrued_until)
            select d.c, d.m, v_now_hour from due d
            on conflict (customer_id, meter_id) do update
                set accrued_until = greatest(g.accrued_until, excluded.accrued_until), updated_at = pg_catalog.now()
            returning 1
        )
        -- (series and dims_written are not read: a data-modifying CTE runs to completion all the same)
        select pg_catalog.array_agg(w.customer_id), pg_catalog.array_agg(w.meter_id), pg_catalog.array_agg(w.hour),
               pg_catalog.array_agg(w.revision)
          into v_g_customers, v_g_meters, v_g_hours, v_g_revisions
        from written w;
    end if;

    -- 4b. A max meter billed through a Billing Meter sends each hour's running maximum of its
    -- UTC month (the engine's formula last then bills the month's maximum, decision 102), and a
    -- latest meter (either engine API) each hour's running last value of its month: a changed
    -- hour changes what every later hour of its month must carry, so those get a new outbox
    -- revision (ahead of their rollup's) and are sent again, like any changed hour.
    select pg_catalog.array_agg(o.customer_id), pg_catalog.array_agg(o.meter_id), pg_catalog.array_agg(o.hour)
      into v_l_customers, v_l_meters, v_l_hours
    from (select k.c as customer_id, k.m as meter_id, pg_catalog.min(k.h) as first_changed
          from rows from (pg_catalog.unnest(coalesce(v_customers, '{}') || coalesce(v_c_customers, '{}')),
                          pg_catalog.unnest(coalesce(v_meters, '{}') || coalesce(v_c_meters, '{}')),
                          pg_catalog.unnest(coalesce(v_hours_changed, '{}') || coalesce(v_c_hours, '{}'))) as k(c, m, h)
          where exists (select 1 from meter.billing_prices b join meter.meter_versions v on v.meter_id = b.meter_id
                        where b.meter_id = k.m
                          and ((b.engine_api = 'meter_events' and v.aggregation = 'max') or v.aggregation = 'latest'))
          group by k.c, k.m, pg_catalog.date_trunc('month', k.h)) t
    join meter.sync_outbox o
      on o.customer_id = t.customer_id and o.meter_id = t.meter_id
     and o.hour > t.first_changed
     and o.hour < pg_catalog.date_trunc('month', t.first_changed) + interval '1 month';

    -- 4d. Every billed hour this run changed (steps 2, 3 and 4a, at least its rollup revision) and
    -- every later hour step 4b named (one more revision): returned to meter.rollup_run, which
    -- gives them their new outbox revision in one statement for every shard it ran (key order).
    outbox_customers := coalesce(v_customers, '{}') || coalesce(v_c_customers, '{}') || coalesce(v_g_customers, '{}') || coalesce(v_l_customers, '{}');
    outbox_meters    := coalesce(v_meters, '{}') || coalesce(v_c_meters, '{}') || coalesce(v_g_meters, '{}') || coalesce(v_l_meters, '{}');
    outbox_hours     := coalesce(v_hours_changed, '{}') || coalesce(v_c_hours, '{}') || coalesce(v_g_hours, '{}') || coalesce(v_l_hours, '{}');
    outbox_revisions := coalesce(v_revisions, '{}') || coalesce(v_c_revisions, '{}') || coalesce(v_g_revisions, '{}')
                        || pg_catalog.array_fill(0::bigint, array[coalesce(pg_catalog.cardinality(v_l_hours), 0)]);

    -- 4c. Alerts and limits the changed hours reach fire now, once per customer and period, with
    -- their webhook messages, in this transaction (meter._alerts_evaluate; nothing to do and one
    -- query when there is no alert and no limit).
    perform meter._alerts_evaluate(
        coalesce(v_customers, '{}') || coalesce(v_c_customers, '{}') || coalesce(v_g_customers, '{}'),
        coalesce(v_meters, '{}') || coalesce(v_c_meters, '{}') || coalesce(v_g_meters, '{}'),
        coalesce(v_hours_changed, '{}') || coalesce(v_c_hours, '{}') || coalesce(v_g_hours, '{}'));
    -- ... and events or cancellations folded into closed periods are told (usage.late_after_close;
    -- gauge hours accruing are not news)
    perform meter._late_after_close_emit(
        coalesce(v_customers, '{}') || coalesce(v_c_customers, '{}'),
        coalesce(v_meters, '{}') || coalesce(v_c_meters, '{}'),
        coalesce(v_hours_changed, '{}') || coalesce(v_c_hours, '{}'),
        v_end_xid::text || ':' || v_end_id::text);

    -- 5. Move the watermark, in this same transaction.
    select pg_catalog.count(*) into v_hours
    from (select distinct k.c, k.m, k.h
          from rows from (pg_catalog.unnest(coalesce(v_customers, '{}') || coalesce(v_c_customers, '{}') || coalesce(v_g_customers, '{}')),
                          pg_catalog.unnest(coalesce(v_meters, '{}') || coalesce(v_c_meters, '{}') || coalesce(v_g_meters, '{}')),
                          pg_catalog.unnest(coalesce(v_hours_changed, '{}') || coalesce(v_c_hours, '{}') || coalesce(v_g_hours, '{}'))) as k(c, m, h)) d;
    v_ms := round(extract(epoch from pg_catalog.clock_timestamp() - v_started) * 1000, 3);

    update meter.rollup_watermark
    set position_xid           = v_end_xid,
        position_id            = v_end_id,
        updated_at             = pg_catalog.now(),
        runs_total             = runs_total + 1,
        events_total           = events_total + v_events,
        cancellations_total    = cancellations_total + v_cancellations,
        last_run_at            = v_started,
        last_run_events        = v_events,
        last_run_cancellations = v_cancellations,
        last_run_hours         = v_hours,
        last_run_ms            = v_ms,
        redeliveries_xid       = v_r_end_xid,
        redeliveries_id        = v_r_end_id,
        redeliveries_total     = redeliveries_total + v_redeliveries
    where shard = p_shard;

    result := row(true, v_events, v_cancellations, v_hours, v_end_xid, v_end_id, v_horizon, v_more, v_ms)
        ::meter.rollup_result;
end;
$$;

comment on function meter._rollup_fold(integer, integer) is
    'One rollup shard''s run (meter.rollup_run): folds, ledger, period rows, alerts, watermark; returns the hours whose outbox revision must move.';

revoke all on function meter._rollup_fold(integer, integer) from public;
