-- meter.events_archive(month, file, sha256, events, hashes_checked, late_window): the last step
-- of `meterctl events archive`, once the month's partition is exported and the export verified.
-- In one transaction:
--   1. checks again what meter.events_archive_check checks (it raises the same reasons), and
--      that the partition still holds exactly `events` rows (the file's);
--   2. keeps, with each key of the month in meter.event_keys, the SHA-256 of its event's content
--      (meter._event_digest), so that a retry still gets duplicate or conflict;
--   3. removes the month's hours from the billing outbox (meter.sync_outbox): the month is final
--      on both sides, and an hour that was never acknowledged (pending, dead, closed) was a
--      reconciliation line explained in the sign-off; a send in flight refuses (run again);
--   4. records the archive (meter.event_archives: file, SHA-256, rows, hashes checked, outbox
--      rows removed);
--   5. detaches the partition from meter.events and drops it.
-- Returns the meter.event_archives row. DETACH takes an ACCESS EXCLUSIVE lock on meter.events
-- for the end of the transaction (ingest waits that long; lock_timeout 10 s makes it fail rather
-- than queue behind a long transaction while holding ingest back).
create or replace function meter.events_archive(
    p_month          text,
    p_file           text,
    p_sha256         text,
    p_events         bigint,
    p_hashes_checked integer,
    p_late_window    interval default interval '35 days 5 minutes')
returns setof meter.event_archives
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
set lock_timeout = '10s'
as $$
declare
    v_check  record;
    v_rows   bigint;
    v_outbox bigint;
begin
    if p_file is null or pg_catalog.length(p_file) = 0 then
        raise exception 'file must name the archive file' using errcode = '22023';
    end if;
    if p_sha256 is null or p_sha256 !~ '^[0-9a-f]{64}$' then
        raise exception 'sha256 must be 64 lowercase hex digits' using errcode = '22023';
    end if;
    if p_hashes_checked is null or p_hashes_checked < 0 then
        raise exception 'hashes_checked must be given' using errcode = '22023';
    end if;
    -- No event can arrive past the late window; hold the month still all the same.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.events_partitions'));
    select * into strict v_check from meter.events_archive_check(p_month, p_late_window);
    execute pg_catalog.format('select pg_catalog.count(*) from meter.%I', v_check.partition_name) into v_rows;
    if v_rows is distinct from p_events then
        raise exception 'the partition % holds % events, the file %: export again', v_check.partition_name, v_rows, p_events
            using errcode = '55000';
    end if;

    execute pg_catalog.format(
        'update meter.event_keys k
         set archived_digest = meter._event_digest(e.meter_id, e.occurred_at, e.value, e.properties)
         from meter.%I e
         where k.customer_id = e.customer_id and k.idempotency_key = e.idempotency_key and k.event_id = e.id',
        v_check.partition_name);
    get diagnostics v_rows = row_count;
    if v_rows <> p_events then
        raise exception 'internal inconsistency: % keys for % events of %', v_rows, p_events, v_check.partition_name
            using errcode = 'XX000';
    end if;

    if exists (select 1 from meter.sync_outbox o
               where o.hour >= v_check.range_from and o.hour < v_check.range_to and o.state = 'in_flight') then
        raise exception 'a send of an hour of month % to the billing engine is in flight: run again in a minute', p_month
            using errcode = '55000';
    end if;
    delete from meter.sync_outbox o where o.hour >= v_check.range_from and o.hour < v_check.range_to;
    get diagnostics v_outbox = row_count;

    insert into meter.event_archives (period_start, period_end, events, file, sha256, hashes_checked, outbox_rows)
    values (v_check.range_from, v_check.range_to, p_events, p_file, p_sha256, p_hashes_checked, v_outbox);

    execute pg_catalog.format('alter table meter.events detach partition meter.%I', v_check.partition_name);
    execute pg_catalog.format('drop table meter.%I', v_check.partition_name);

    return query select * from meter.event_archives a where a.period_start = v_check.range_from;
end;
$$;

comment on function meter.events_archive(text, text, text, bigint, integer, interval) is
    'Archives a verified UTC month of events: keeps each key''s content digest, records the file, detaches and drops the partition.';
revoke all on function meter.events_archive(text, text, text, bigint, integer, interval) from public;
