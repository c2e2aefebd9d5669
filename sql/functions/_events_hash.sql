-- meter._events_hash(customer_id, meter_id, from, to): the content hash of an invoice line.
--
-- hex SHA-256 over the line's events (occurred in [from, to), not cancelled), one line per event,
-- "<idempotency_key><TAB><value>", sorted by idempotency key (byte order, COLLATE "C"), joined by
-- newlines. An auditor recomputes it in psql from raw events alone:
--
--   select encode(sha256(convert_to(coalesce(string_agg(e.idempotency_key || E'\t' || e.value::text, E'\n'
--                 order by e.idempotency_key collate "C"), ''), 'UTF8')), 'hex')
--   from meter.events e
--   where e.customer_id = <id> and e.meter_id = <id> and e.occurred_at >= '<from>' and e.occurred_at < '<to>'
--     and not exists (select 1 from meter.event_cancellations c where c.event_id = e.id);
--
-- A line without events hashes the empty string (e3b0c442...); without the coalesce the query
-- above would give null for it.
--
-- The events are those the rollups hold: below the rollup watermark, and cancelled only when the
-- cancellation was subtracted (rolled_up_at set). meter.period_close, which holds the rollup lock
-- while it runs, so gets a hash of exactly the events its quantity counts, even when another
-- event commits meanwhile (it waits for a later run and an adjustment line). After the close,
-- when everything is rolled up, the auditor's query above gives the same hash.
--
-- The close hashes each invoice line with meter._line_hash (a meter priced per filter of its
-- dimensions has a line per filter); this is that hash for a whole meter.
create or replace function meter._events_hash(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_from        timestamptz,
    p_to          timestamptz)
returns text
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
begin
    -- the whole meter's events: meter._line_hash without a plan (every event is on the line)
    return meter._line_hash(p_customer_id, p_meter_id, p_from, p_to, null, '{}');
end;
$$;

comment on function meter._events_hash(bigint, bigint, timestamptz, timestamptz) is
    'SHA-256 (hex) of a line''s events: sorted "key<TAB>value" lines; recomputable in psql.';

revoke all on function meter._events_hash(bigint, bigint, timestamptz, timestamptz) from public;
