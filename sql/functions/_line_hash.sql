-- meter._line_hash(customer_id, meter_id, from, to, plan_id, filter): the content hash of an
-- invoice line: the SHA-256 of meter._events_hash's recipe (sorted "key<TAB>value" lines) over the
-- line's events: a priced filter's, or the whole meter's. For a meter its plan prices without
-- filters it equals meter._events_hash, so lines of meters without dimensions keep their hash. The
-- auditor's psql recipe in _events_hash.sql gives it with one more condition: the event's
-- dimension values fall under the line's filter (docs/runbook.md).
--
-- As _events_hash: only events the rollups hold (below the watermark; cancelled ones only once the
-- cancellation was subtracted), so that a close gets the hash of exactly what it counts.
-- meter._line_hashes for one request: the recipe is written there, once.
create or replace function meter._line_hash(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_from        timestamptz,
    p_to          timestamptz,
    p_plan_id     bigint,
    p_filter      jsonb)
returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
    return (select h.events_hash
            from meter._line_hashes(array[p_customer_id], array[p_meter_id], array[p_from], array[p_to],
                                    array[p_plan_id], array[p_filter]) h);
end;
$$;

comment on function meter._line_hash(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) is
    'SHA-256 (hex) of an invoice line''s events (sorted "key<TAB>value" lines), per priced filter.';
revoke all on function meter._line_hash(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) from public;
