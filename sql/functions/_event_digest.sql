-- meter._event_digest(meter_id, occurred_at, value, properties): SHA-256 of an event's content,
-- the four fields an idempotency verdict compares (customer and key are the key itself).
--
-- Archiving a month (meterctl events archive) stores it in meter.event_keys.archived_digest
-- before the month's rows are dropped, and meter.event_ingest_arrays compares a redelivery of an
-- archived event with it: same digest = duplicate, else conflict, as against the row itself.
-- Equal as the row comparison is: occurred_at in UTC to the microsecond, value with trailing
-- zeros trimmed (5.0 = 5.00, as numeric equality has it), properties as jsonb prints them (keys
-- sorted, duplicates removed). One difference, documented in decision 121: two numbers inside
-- properties that jsonb finds equal but prints differently (1.0 and 1) are equal for the row
-- comparison and different digests, so such a retry of an archived event is a conflict.
create or replace function meter._event_digest(
    p_meter_id    bigint,
    p_occurred_at timestamptz,
    p_value       numeric,
    p_properties  jsonb)
returns bytea
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.sha256(pg_catalog.convert_to(
               p_meter_id::text
               || '|' || pg_catalog.to_char(p_occurred_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
               || '|' || pg_catalog.trim_scale(p_value)::text
               || '|' || p_properties::text,
               'UTF8'))
$$;

comment on function meter._event_digest(bigint, timestamptz, numeric, jsonb) is
    'SHA-256 of an event''s content (meter, occurred_at UTC, value trimmed, properties): judged for archived events.';
revoke all on function meter._event_digest(bigint, timestamptz, numeric, jsonb) from public;
