-- meter.reconciliation_verify(period): the full recomputation from raw events that
-- meter.reconciliation no longer does (decision 123). For every usage line of the period's
-- invoices, the line's raw events (meter._event_in_line) are read and compared with what the
-- ledger and the rollups hold for it; one row per figure that differs. Empty: every line's ledger
-- and rollup quantity are what the raw events say.
--
--   events        events net of cancellations folded          vs the ledger (and the rollup's count)
--   cancelled     events whose cancellation was folded         vs the ledger
--   duplicates    redeliveries acknowledged as duplicates      vs the ledger
--   value         Σ value net of cancellations                 vs the ledger
--   key_checksum  Σ hashtextextended(idempotency_key, 0), net  vs the ledger
--   quantity      the line's quantity per aggregation (count, Σ, max, distinct values, the last
--                 event's, a gauge's integral) from raw events   vs the rollup (meter._line_usage)
--
-- The ledger's late count is not recomputed: it is defined by when the fold happened (after the
-- close), which raw events do not record (their received_at is when they arrived).
--
-- Compares what the rollup has folded: events below the watermark, cancellations with
-- rolled_up_at, redeliveries below their position (the duplicates of every event of the line,
-- folded or not: the rollup takes redeliveries by their own position); rows not folded yet are
-- not differences. It reads every raw event of the period once (joined to its line, to its
-- cancellation and duplicates by hash; the price of a combination of dimension values found once,
-- not per event): seconds per million events, for an audit or a nightly job, not for every look at the reconciliation. A month
-- already archived (meter.events_archive) has no raw events to read: its lines are skipped.
create or replace function meter.reconciliation_verify(p_period text)
returns table (customer text, line text, figure text, ledger numeric, raw numeric)
language sql
stable
-- (analysts run it; it reads raw events and redeliveries, which they cannot read themselves)
security definer
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
set jit = off
set work_mem = '256MB'
as $$
    -- (one row per rollup shard: a customer's events and redeliveries count against its shard's)
    with w as (
        select x.shard, x.shard_count, x.position_xid, x.position_id, x.redeliveries_xid, x.redeliveries_id
        from meter.rollup_watermark x
    ),
    -- the period's usage lines, with what the ledger and the rollups hold for each
    lines as materialized (
        select pg_catalog.row_number() over (order by i.id, l.line_no) as n,
               i.period_start, i.period_end, i.customer_id, i.plan_id, c.external_id as customer,
               l.meter_id, l.price_filter, m.code || meter._filter_label(l.price_filter, f.per_filter) as line, f.per_filter,
               u.aggregation, u.quantity as r_quantity, u.event_count as r_events,
               lg.events as l_events, lg.cancelled as l_cancelled, lg.duplicates as l_duplicates,
               lg.value as l_value, lg.key_checksum as l_checksum,
               (select v.unique_property from meter.meter_version_ranges v
                where v.meter_id = l.meter_id and v.effective_from <= i.period_start
                  and v.effective_until > i.period_start) as unique_property
        from meter.invoices i
        join meter.invoice_lines l on l.invoice_id = i.id and l.kind = 'usage'
        join meter.customers c on c.id = i.customer_id
        join meter.meters m on m.id = l.meter_id
        cross join lateral (
            select exists (select 1 from meter.plan_prices pp
                           where pp.plan_id = i.plan_id and pp.meter_id = l.meter_id and pp.filter <> '{}') as per_filter
        ) f
        cross join lateral meter._line_usage(i.customer_id, l.meter_id, i.period_start, i.period_end, i.plan_id, l.price_filter) u
        cross join lateral meter._line_ledger(i.customer_id, l.meter_id, i.period_start, i.period_end, i.plan_id, l.price_filter) lg
        where i.period = p_period
          and not exists (select 1 from meter.event_archives a
                          where a.period_start < i.period_end and a.period_end > i.period_start)
    ),
    cancelled as (
        select x.event_id from meter.event_cancellations x where x.rolled_up_at is not null
    ),
    duplicates as (
        select r.event_id, pg_catalog.count(*) as n
        from meter.event_redeliveries r join w on w.shard = r.customer_id % w.shard_count
        where r.verdict = 'duplicate' and (r.xid, r.id) < (w.redeliveries_xid, w.redeliveries_id)
        group by r.event_id
    ),
    -- every raw event of every line (UTC hours of the line: billing periods start on a UTC hour,
    -- meter.billing_period), counted when folded and not cancelled; for a line of a meter priced
    -- per filter, with its dimension values under the version in force at its time
    ev as (
        select li.n, e.value, e.idempotency_key, e.occurred_at, e.properties,
               (e.xid, e.id) < (w.position_xid, w.position_id) and x.event_id is null as counted,
               (e.xid, e.id) < (w.position_xid, w.position_id) and x.event_id is not null as cancelled,
               coalesce(d.n, 0) as duplicates,
               -- (meter._dimension_values written out: called per event it cost a third of the time)
               case when not li.per_filter then null
                    when dv.dimensions is null or pg_catalog.cardinality(dv.dimensions) = 0 then '{}'::jsonb
                    when pg_catalog.cardinality(dv.dimensions) = 1
                        then pg_catalog.jsonb_build_object(dv.dimensions[1], e.properties ->> dv.dimensions[1])
                    when pg_catalog.cardinality(dv.dimensions) = 2
                        then pg_catalog.jsonb_build_object(dv.dimensions[1], e.properties ->> dv.dimensions[1],
                                                           dv.dimensions[2], e.properties ->> dv.dimensions[2])
                    else pg_catalog.jsonb_build_object(dv.dimensions[1], e.properties ->> dv.dimensions[1],
                                                       dv.dimensions[2], e.properties ->> dv.dimensions[2],
                                                       dv.dimensions[3], e.properties ->> dv.dimensions[3])
               end as dims
        from lines li
        join w on w.shard = li.customer_id % w.shard_count
        join meter.events e
          on e.customer_id = li.customer_id and e.meter_id = li.meter_id
         and e.occurred_at >= li.period_start and e.occurred_at < li.period_end
        left join meter.meter_version_ranges dv
          on li.per_filter and dv.meter_id = e.meter_id and e.occurred_at >= dv.effective_from and e.occurred_at < dv.effective_until
        left join cancelled x on x.event_id = e.id
        left join duplicates d on d.event_id = e.id
    ),
    -- per line and combination of dimension values first (one for a line without filters), so
    -- that the price of a combination is found once (meter._dims_priced_by, as meter._event_in_line
    -- decides it per event); a meter priced per filter is a count, sum, max or gauge meter, whose
    -- figures add up across combinations
    raw_dims as (
        select ev.n, ev.dims,
               pg_catalog.count(*) filter (where ev.counted) as events,
               pg_catalog.count(*) filter (where ev.cancelled) as cancelled,
               pg_catalog.sum(ev.duplicates) as duplicates,
               coalesce(pg_catalog.sum(ev.value) filter (where ev.counted), 0) as value,
               coalesce(pg_catalog.sum(pg_catalog.hashtextextended(ev.idempotency_key, 0)) filter (where ev.counted), 0) as checksum,
               pg_catalog.max(ev.value) filter (where ev.counted) as max_value,
               (pg_catalog.array_agg(ev.value order by ev.occurred_at desc, ev.idempotency_key collate "C" desc)
                   filter (where ev.counted and li.aggregation = 'latest'))[1] as latest_value,
               pg_catalog.count(distinct ev.properties ->> li.unique_property)
                   filter (where ev.counted and li.aggregation = 'unique_count') as distinct_values
        from ev join lines li on li.n = ev.n
        group by ev.n, ev.dims
        offset 0
    ),
    raw as (
        select r.n, pg_catalog.sum(r.events) as events, pg_catalog.sum(r.cancelled) as cancelled,
               pg_catalog.sum(r.duplicates) as duplicates, pg_catalog.sum(r.value) as value, pg_catalog.sum(r.checksum) as checksum,
               pg_catalog.max(r.max_value) as max_value, pg_catalog.max(r.latest_value) as latest_value,
               pg_catalog.sum(r.distinct_values) as distinct_values
        from raw_dims r join lines li on li.n = r.n
        where not li.per_filter or meter._dims_priced_by(li.plan_id, li.meter_id, r.dims) = li.price_filter
        group by r.n
    ),
    figures as (
        select li.*, coalesce(r.events, 0) as events, coalesce(r.cancelled, 0) as cancelled,
               coalesce(r.duplicates, 0) as duplicates, coalesce(r.value, 0) as value, coalesce(r.checksum, 0) as checksum,
               case li.aggregation
                   when 'count' then coalesce(r.events, 0)::numeric
                   when 'sum' then coalesce(r.value, 0)
                   when 'max' then coalesce(r.max_value, 0)
                   when 'latest' then coalesce(r.latest_value, 0)
                   when 'unique_count' then coalesce(r.distinct_values, 0)::numeric
                   -- a gauge's integral, from the events folded, carrying in the value held at the
                   -- period's start (one series per combination of dimension values, the line's)
                   when 'time_weighted_sum' then
                       case when not exists (select 1 from meter.meter_versions v
                                             where v.meter_id = li.meter_id and pg_catalog.cardinality(v.dimensions) > 0) then (
                           select coalesce(pg_catalog.sum(g.quantity), 0)
                           from w, meter._gauge_hours(li.customer_id, li.meter_id, li.period_start, li.period_end,
                                                      w.position_xid, w.position_id) g
                           where w.shard = li.customer_id % w.shard_count)
                       else (
                           select coalesce(pg_catalog.sum(g.quantity), 0)
                           from w, meter._gauge_dims_hours(li.customer_id, li.meter_id, li.period_start, li.period_end,
                                                           w.position_xid, w.position_id) g
                           where w.shard = li.customer_id % w.shard_count
                             and (not li.per_filter or meter._dims_priced_by(li.plan_id, li.meter_id, g.dims) = li.price_filter))
                       end
               end as quantity
        from lines li left join raw r on r.n = li.n
    )
    select f.customer, f.line, d.figure, d.ledger, d.raw
    from figures f
    cross join lateral (values
        ('events', f.l_events::numeric, f.events::numeric),
        ('events (rollup)', f.r_events::numeric, f.events::numeric),
        ('cancelled', f.l_cancelled::numeric, f.cancelled::numeric),
        ('duplicates', f.l_duplicates::numeric, f.duplicates::numeric),
        ('value', f.l_value, f.value),
        ('key_checksum', f.l_checksum, f.checksum),
        ('quantity (rollup)', f.r_quantity, f.quantity)
    ) as d(figure, ledger, raw)
    where d.ledger is distinct from d.raw
    order by f.customer collate "C", f.line collate "C", d.figure
$$;

comment on function meter.reconciliation_verify(text) is
    'Recomputes every usage line of a period from raw events and lists each figure where the ledger or the rollup differs (empty: all agree).';
revoke all on function meter.reconciliation_verify(text) from public;
grant execute on function meter.reconciliation_verify(text) to meter_analyst;
