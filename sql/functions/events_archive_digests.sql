-- meter.events_archive_digests(month): before a month is archived, keep with each of its keys
-- in meter.event_keys the SHA-256 of its event's content (meter._event_digest), so that a retry
-- of an archived event is still judged duplicate or conflict. Returns the keys written.
--
-- Its own transaction, before meter.events_archive (`meterctl events archive` calls it once the
-- file is verified): the final transaction then holds no key row while it waits for the lock
-- its DETACH needs (an ingest reusing one of the month's keys waits on that row while holding
-- its share of meter.events: in one transaction the two would deadlock). A digest on a key whose
-- event is still online changes nothing: it is read only when the row is gone. Idempotent.
create or replace function meter.events_archive_digests(p_month text)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_part text;
    v_rows bigint;
begin
    if p_month is null or p_month !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' then
        raise exception 'month must be YYYY-MM, got %', coalesce(p_month, 'null') using errcode = '22023';
    end if;
    v_part := 'events_' || pg_catalog.replace(p_month, '-', '_');
    if not exists (select 1 from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
                   where i.inhparent = 'meter.events'::regclass and c.relname = v_part) then
        raise exception 'meter.events has no partition % for month %', v_part, p_month using errcode = '55000';
    end if;
    execute pg_catalog.format(
        'update meter.event_keys k
         set archived_digest = meter._event_digest(e.meter_id, e.occurred_at, e.value, e.properties)
         from meter.%I e
         where k.customer_id = e.customer_id and k.idempotency_key = e.idempotency_key and k.event_id = e.id
           and k.archived_digest is distinct from meter._event_digest(e.meter_id, e.occurred_at, e.value, e.properties)',
        v_part);
    get diagnostics v_rows = row_count;
    return v_rows;
end;
$$;

comment on function meter.events_archive_digests(text) is
    'Keeps each key of a month the content digest of its event (before meterctl events archive drops the month).';
revoke all on function meter.events_archive_digests(text) from public;
