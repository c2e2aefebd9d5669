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
-- Reads only what the rollup has folded: events below the watermark, cancellations with
-- rolled_up_at, redeliveries below their position (run it after the rollup has caught up, as the
-- close requires). It reads every raw event of the period once per line: seconds per million
-- events, for an audit or a nightly job, not for every look at the reconciliation. A month
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
as $$
    with lines as (
        select i.period_start, i.period_end, i.customer_id, i.plan_id, c.external_id as customer,
               l.meter_id, l.price_filter, m.code || meter._filter_label(l.price_filter, f.per_filter) as line,
               f.per_filter
        from meter.invoices i
        join meter.invoice_lines l on l.invoice_id = i.id and l.kind = 'usage'
        join meter.customers c on c.id = i.customer_id
        join meter.meters m on m.id = l.meter_id
        cross join lateral (
            select exists (select 1 from meter.plan_prices pp
                           where pp.plan_id = i.plan_id and pp.meter_id = l.meter_id and pp.filter <> '{}') as per_filter
        ) f
        where i.period = p_period
          and not exists (select 1 from meter.event_archives a
                          where a.period_start < i.period_end and a.period_end > i.period_start)
    ),
    figures as (
        select li.customer, li.line, lg.events as l_events, lg.cancelled as l_cancelled, lg.duplicates as l_duplicates,
               lg.value as l_value, lg.key_checksum as l_checksum, u.quantity as r_quantity, u.event_count as r_events,
               raw.*
        from lines li
        cross join lateral meter._line_ledger(li.customer_id, li.meter_id, li.period_start, li.period_end, li.plan_id, li.price_filter) lg
        cross join lateral meter._line_usage(li.customer_id, li.meter_id, li.period_start, li.period_end, li.plan_id, li.price_filter) u
        cross join lateral (
            select pg_catalog.count(*) filter (where not e.cancelled) as events,
                   pg_catalog.count(*) filter (where e.cancelled) as cancelled,
                   coalesce(pg_catalog.sum(e.duplicates), 0) as duplicates,
                   coalesce(pg_catalog.sum(e.value) filter (where not e.cancelled), 0) as value,
                   coalesce(pg_catalog.sum(pg_catalog.hashtextextended(e.idempotency_key, 0)) filter (where not e.cancelled), 0) as checksum,
                   case u.aggregation
                       when 'count' then pg_catalog.count(*) filter (where not e.cancelled)::numeric
                       when 'sum' then coalesce(pg_catalog.sum(e.value) filter (where not e.cancelled), 0)
                       when 'max' then coalesce(pg_catalog.max(e.value) filter (where not e.cancelled), 0)
                       when 'latest' then coalesce((pg_catalog.array_agg(e.value order by e.occurred_at desc, e.idempotency_key collate "C" desc)
                                                    filter (where not e.cancelled))[1], 0)
                       when 'time_weighted_sum' then
                           case when not exists (select 1 from meter.meter_versions v
                                                 where v.meter_id = li.meter_id and pg_catalog.cardinality(v.dimensions) > 0) then (
                               select coalesce(pg_catalog.sum(g.quantity), 0)
                               from meter._gauge_hours(li.customer_id, li.meter_id, li.period_start, li.period_end) g)
                           else (
                               select coalesce(pg_catalog.sum(g.quantity), 0)
                               from meter._gauge_dims_hours(li.customer_id, li.meter_id, li.period_start, li.period_end) g
                               where not li.per_filter or meter._dims_priced_by(li.plan_id, li.meter_id, g.dims) = li.price_filter)
                           end
                       when 'unique_count' then pg_catalog.count(distinct e.properties ->> (
                           select v.unique_property from meter.meter_version_ranges v
                           where v.meter_id = li.meter_id and v.effective_from <= li.period_start
                             and v.effective_until > li.period_start)) filter (where not e.cancelled)::numeric
                   end as quantity
            from (
                select e.value, e.idempotency_key, e.occurred_at, e.properties,
                       exists (select 1 from meter.event_cancellations x
                               where x.event_id = e.id and x.rolled_up_at is not null) as cancelled,
                       (select pg_catalog.count(*) from meter.event_redeliveries r
                        where r.event_id = e.id and r.verdict = 'duplicate'
                          and (r.xid, r.id) < (w.redeliveries_xid, w.redeliveries_id)) as duplicates
                from meter.events e
                cross join meter.rollup_watermark w
                where e.customer_id = li.customer_id and e.meter_id = li.meter_id
                  -- (hours of the line: the rollups assign whole UTC hours to a period by their start)
                  and e.occurred_at >= li.period_start and e.occurred_at < li.period_end
                  and (e.xid, e.id) < (w.position_xid, w.position_id)
                  and (not li.per_filter or meter._event_in_line(li.plan_id, li.meter_id, li.price_filter, e.properties, e.occurred_at))
            ) e
        ) raw
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
