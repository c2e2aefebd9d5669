-- meter.events_archive_sample(month, sample): recompute a sample of invoice-line events hashes
-- from an archive file before the month's partition is dropped (`meterctl events archive`).
--
-- The caller has loaded the file into pg_temp.events_archive_file (the columns of meter.events,
-- as COPY exported them). For up to `sample` usage lines with events, of invoices whose period
-- overlaps the month (chosen by a hash of (invoice, line): spread, and the same on every run),
-- returns the line's stored events_hash, the hash recomputed with the file standing in for the
-- month's partition (the rows of other months from meter.events), and the hash recomputed from
-- meter.events alone. The file holds the month when the last two agree on every line; the first
-- is the close's own figure (computed by the rollup watermark at the close, where this recipe
-- uses arrival and cancellation times: an event in flight at the close can make them differ;
-- `meterctl events archive` reports such lines). Lines of periods that also overlap a month
-- archived before are left out (their other month is in its own file).
--
-- The recomputation is the auditor's recipe (docs/runbook.md, "Reconciliation MISMATCH
-- triage"): the line's events of its period (its price filter applied, meter._event_in_line,
-- when the plan prices the meter per filter) that had arrived by the close and were not
-- cancelled by then, as sorted "key<TAB>value" lines, SHA-256, hex (meter._line_hash's form).
create or replace function meter.events_archive_sample(p_month text, p_sample integer default 100)
returns table (invoice_id bigint, line_no integer, customer text, meter text, period text,
               events_hash text, hash_from_file text, hash_from_database text)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
    v_from timestamptz;
    v_to   timestamptz;
begin
    if p_month is null or p_month !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' then
        raise exception 'month must be YYYY-MM, got %', coalesce(p_month, 'null') using errcode = '22023';
    end if;
    if p_sample is null or p_sample < 1 then
        raise exception 'sample must be a positive integer' using errcode = '22023';
    end if;
    if pg_catalog.to_regclass('pg_temp.events_archive_file') is null then
        raise exception 'load the archive file into pg_temp.events_archive_file first' using errcode = '55000';
    end if;
    v_from := (p_month || '-01 00:00:00+00')::timestamptz;
    v_to := v_from + interval '1 month';

    return query
    with lines as (
        select i.id as invoice_id, l.line_no, i.customer_id, l.meter_id, i.plan_id, l.price_filter,
               i.period, i.period_start, i.period_end, i.closed_at, l.events_hash,
               exists (select 1 from meter.plan_prices f
                       where f.plan_id = i.plan_id and f.meter_id = l.meter_id and f.filter <> '{}') as per_filter
        from meter.invoices i
        join meter.invoice_lines l on l.invoice_id = i.id and l.kind = 'usage' and l.event_count > 0
        where i.period_start < v_to and i.period_end > v_from
          -- a period that also overlaps a month archived before cannot be recomputed whole
          and not exists (select 1 from meter.event_archives a
                          where a.period_start < i.period_end and a.period_end > i.period_start)
        order by pg_catalog.md5(i.id || '/' || l.line_no)
        limit p_sample
    )
    select li.invoice_id, li.line_no, c.external_id, m.code, li.period, li.events_hash,
           pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(coalesce(h.from_file, ''), 'UTF8')), 'hex'),
           pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(coalesce(h.from_database, ''), 'UTF8')), 'hex')
    from lines li
    join meter.customers c on c.id = li.customer_id
    join meter.meters m on m.id = li.meter_id
    -- The line's events by the recipe, once: the file's rows count for the file's hash, the
    -- table's rows of the month for the database's, the table's other months for both.
    cross join lateral (
        select pg_catalog.string_agg(e.idempotency_key || E'\t' || e.value::text, E'\n' order by e.idempotency_key collate "C")
                   filter (where e.for_file) as from_file,
               pg_catalog.string_agg(e.idempotency_key || E'\t' || e.value::text, E'\n' order by e.idempotency_key collate "C")
                   filter (where e.for_database) as from_database
        from (select f.id, f.customer_id, f.meter_id, f.idempotency_key, f.occurred_at, f.received_at, f.value, f.properties,
                     true as for_file, false as for_database
              from pg_temp.events_archive_file f
              union all
              select o.id, o.customer_id, o.meter_id, o.idempotency_key, o.occurred_at, o.received_at, o.value, o.properties,
                     o.occurred_at < v_from or o.occurred_at >= v_to, true
              from meter.events o) e
        where e.customer_id = li.customer_id and e.meter_id = li.meter_id
          and e.occurred_at >= li.period_start and e.occurred_at < li.period_end
          and e.received_at <= li.closed_at
          and not exists (select 1 from meter.event_cancellations x where x.event_id = e.id and x.cancelled_at <= li.closed_at)
          and (not li.per_filter or meter._event_in_line(li.plan_id, li.meter_id, li.price_filter, e.properties, e.occurred_at))
    ) h
    order by li.invoice_id, li.line_no;
end;
$$;

comment on function meter.events_archive_sample(text, integer) is
    'Recomputes a sample of invoice-line events hashes with an archive file in place of the month''s partition (meterctl events archive).';
revoke all on function meter.events_archive_sample(text, integer) from public;
