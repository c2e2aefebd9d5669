-- meter._line_hash(customer_id, meter_id, from, to, plan_id, filter): the content hash of an
-- invoice line: the SHA-256 of meter._events_hash's recipe (sorted "key<TAB>value" lines) over the
-- line's events (meter._line_events): a priced filter's, or the whole meter's. For a meter its plan
-- prices without filters it equals meter._events_hash, so lines of meters without dimensions keep
-- their hash. The auditor's psql recipe in _events_hash.sql gives it with one more condition: the
-- event's dimension values fall under the line's filter (docs/runbook.md).
--
-- As _events_hash: only events the rollups hold (below the watermark; cancelled ones only once the
-- cancellation was subtracted), so that a close gets the hash of exactly what it counts.
create or replace function meter._line_hash(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_from        timestamptz,
    p_to          timestamptz,
    p_plan_id     bigint,
    p_filter      jsonb)
returns text
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(coalesce(pg_catalog.string_agg(
               e.idempotency_key || E'\t' || e.value::text, E'\n' order by e.idempotency_key collate "C"), ''), 'UTF8')), 'hex')
    from meter._line_events(p_customer_id, p_meter_id, p_from, p_to, p_plan_id, p_filter) e
    -- (folded: below the watermark of the customer's rollup shard)
    where (e.xid, e.id) < (select w.position_xid, w.position_id from meter.rollup_watermark w
                           where w.shard = p_customer_id % w.shard_count)
      and not exists (select 1 from meter.event_cancellations c where c.event_id = e.id and c.rolled_up_at is not null);
$$;

comment on function meter._line_hash(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) is
    'SHA-256 (hex) of an invoice line''s events (sorted "key<TAB>value" lines), per priced filter.';
revoke all on function meter._line_hash(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) from public;
