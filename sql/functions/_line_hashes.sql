-- meter._line_hashes(customer_ids, meter_ids, froms, tos, plan_ids, filters): the content hashes of
-- many invoice lines at once, one row per request (i, from 1, in the arrays' order; the requests
-- of meter._line_figures): the close hashes all its lines with one call. The same recipe for one
-- line is meter._line_hash (over meter._line_events); the pgTAP suite compares them after every
-- close (decision 120).
--
-- The hash: SHA-256 (hex) over the line's events, one "key<TAB>value" line each, sorted by key
-- (collation C), joined by newlines (the auditor's recipe in _events_hash.sql); the line's events
-- are the meter's events of the customer in [from, to) that the plan prices with the filter
-- (as meter._event_in_line decides it; every event of the meter when the plan prices it without filters or
-- the plan is NULL). Only the events the rollups hold (below the watermark; a cancelled one once
-- its cancellation was subtracted), so that a close gets the hash of exactly what it counts. No
-- events: the hash of the empty text.
--
-- Reads raw events: the owner's (period_close, invoice_preview as SECURITY DEFINER).
create or replace function meter._line_hashes(
    p_customer_ids bigint[],
    p_meter_ids    bigint[],
    p_from         timestamptz[],
    p_to           timestamptz[],
    p_plan_ids     bigint[],
    p_filters      jsonb[])
returns table (i integer, events_hash text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
set jit = off  -- large cost estimates over arrays made JIT compile for ~1 s per call (decision 120)
as $$
#variable_conflict use_column
begin
    -- Per request, its events read through the (customer, meter, time) index and hashed, as one
    -- subquery each (the events come grouped by request, as a join would not: it sorted all of
    -- a close's events twice). Subtracted cancellations are matched by hashing (NOT IN over a
    -- hashed subplan), not by an index probe per event. For a meter priced per filter, each
    -- event's dimension values (under the version in force at its time) are written out and the
    -- price of each distinct combination is found once (meter._dims_priced_by), which is what
    -- meter._event_in_line decides per event (called per event, it made the closes of the
    -- 6.4 M-event replay's month take 266 s; 1.8 times faster this way, measured per line). A line
    -- of a meter without prices per filter reads its events alone, without the meter versions (a
    -- join per event with their ranges, which it does not need: bench close's hashes 741 -> 483 ms).
    return query
    select q.i::integer,
           case when not q.has_filters then (
               -- the whole meter: its folded, not cancelled events, hashed
               select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(coalesce(pg_catalog.string_agg(
                          e.idempotency_key || E'\t' || e.value::text, E'\n' order by e.idempotency_key collate "C"), ''), 'UTF8')), 'hex')
               from meter.events e
               where e.customer_id = q.customer_id and e.meter_id = q.meter_id
                 and e.occurred_at >= q.r_from and e.occurred_at < q.r_to
                 -- (folded: below the watermark of the customer's rollup shard)
                 and (e.xid, e.id) < (select w.position_xid, w.position_id from meter.rollup_watermark w
                                      where w.shard = q.customer_id % w.shard_count)
                 and e.id not in (select c.event_id from meter.event_cancellations c where c.rolled_up_at is not null))
           else
           (with ev as materialized (
                select e.idempotency_key, e.value,
                       case when dv.dimensions is null or pg_catalog.cardinality(dv.dimensions) = 0 then '{}'::jsonb
                            when pg_catalog.cardinality(dv.dimensions) = 1
                                then pg_catalog.jsonb_build_object(dv.dimensions[1], e.properties ->> dv.dimensions[1])
                            when pg_catalog.cardinality(dv.dimensions) = 2
                                then pg_catalog.jsonb_build_object(dv.dimensions[1], e.properties ->> dv.dimensions[1],
                                                                   dv.dimensions[2], e.properties ->> dv.dimensions[2])
                            else pg_catalog.jsonb_build_object(dv.dimensions[1], e.properties ->> dv.dimensions[1],
                                                               dv.dimensions[2], e.properties ->> dv.dimensions[2],
                                                               dv.dimensions[3], e.properties ->> dv.dimensions[3])
                       end as dims
                from meter.events e
                left join meter.meter_version_ranges dv
                  on dv.meter_id = e.meter_id
                 and e.occurred_at >= dv.effective_from and e.occurred_at < dv.effective_until
                where e.customer_id = q.customer_id and e.meter_id = q.meter_id
                  and e.occurred_at >= q.r_from and e.occurred_at < q.r_to
                  -- (folded: below the watermark of the customer's rollup shard)
                  and (e.xid, e.id) < (select w.position_xid, w.position_id from meter.rollup_watermark w
                                       where w.shard = q.customer_id % w.shard_count)
                  and e.id not in (select c.event_id from meter.event_cancellations c where c.rolled_up_at is not null)
            ),
            priced as (
                select d.dims from (select distinct ev.dims from ev) d
                where meter._dims_priced_by(q.plan_id, q.meter_id, d.dims) = q.filter
            )
            select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(coalesce(pg_catalog.string_agg(
                       ev.idempotency_key || E'\t' || ev.value::text, E'\n' order by ev.idempotency_key collate "C"), ''), 'UTF8')), 'hex')
            from ev
            where ev.dims in (select priced.dims from priced))
           end
    from (select q.*,
                 exists (select 1 from meter.plan_prices pp
                         where pp.plan_id = q.plan_id and pp.meter_id = q.meter_id and pp.filter <> '{}'::jsonb) as has_filters
          from rows from (pg_catalog.unnest(p_customer_ids), pg_catalog.unnest(p_meter_ids), pg_catalog.unnest(p_from),
                          pg_catalog.unnest(p_to), pg_catalog.unnest(p_plan_ids), pg_catalog.unnest(p_filters))
               with ordinality as q(customer_id, meter_id, r_from, r_to, plan_id, filter, i)
          offset 0) as q;  -- (a fence: has_filters evaluated once per request)
end;
$$;

comment on function meter._line_hashes(bigint[], bigint[], timestamptz[], timestamptz[], bigint[], jsonb[]) is
    'SHA-256 (hex) of many invoice lines'' events in one call (sorted "key<TAB>value" lines; one row per request): the one implementation of a line''s hash.';
revoke all on function meter._line_hashes(bigint[], bigint[], timestamptz[], timestamptz[], bigint[], jsonb[]) from public;
