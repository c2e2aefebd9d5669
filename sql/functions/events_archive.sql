-- meter.events_archive(month, file, sha256, events, hashes_checked, late_window): the last step
-- of `meterctl events archive`, once the month's partition is exported, the export verified and
-- the keys' digests written (meter.events_archive_digests). In one transaction:
--   1. checks again what meter.events_archive_check checks (it raises the same reasons);
--   2. detaches the month's partition from meter.events. DETACH takes an ACCESS EXCLUSIVE lock on
--      meter.events: it waits for every transaction that has read or written the events (an
--      ingest, a cancellation) to end, and from then on holds them until this one commits; so
--      what follows sees the month as it will stay (lock_timeout 10 s: rather fail than hold
--      ingest behind a long transaction);
--   3. checks that the detached partition holds exactly the file's `events` rows, that each of
--      them has its key's digest, and that no cancellation of them waits for the rollup (one may
--      have committed while the file was written); any difference refuses, and the DETACH is
--      undone with the rest;
--   4. removes the month's hours from the billing outbox (meter.sync_outbox): the month is final
--      on both sides, and an hour that was never acknowledged (pending, dead, closed) was a
--      reconciliation line explained in the sign-off; a send in flight refuses (run again);
--   5. records the archive (meter.event_archives: file, SHA-256, rows, hashes checked, outbox
--      rows removed) and drops the partition.
-- Returns the meter.event_archives row.
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
    execute pg_catalog.format('alter table meter.events detach partition meter.%I', v_check.partition_name);

    execute pg_catalog.format('select pg_catalog.count(*) from meter.%I', v_check.partition_name) into v_rows;
    if v_rows is distinct from p_events then
        raise exception 'the partition % holds % events, the file %: export again', v_check.partition_name, v_rows, p_events
            using errcode = '55000';
    end if;
    execute pg_catalog.format(
        'select pg_catalog.count(*) from meter.%I e
         where not exists (select 1 from meter.event_keys k
                           where k.customer_id = e.customer_id and k.idempotency_key = e.idempotency_key
                             and k.event_id = e.id and k.archived_digest is not null)',
        v_check.partition_name) into v_rows;
    if v_rows > 0 then
        raise exception '% events of % have no digest on their key: run meter.events_archive_digests(%) first',
            v_rows, v_check.partition_name, p_month using errcode = '55000';
    end if;
    execute pg_catalog.format(
        'select pg_catalog.count(*) from meter.event_cancellations x join meter.%I e on e.id = x.event_id
         where x.rolled_up_at is null', v_check.partition_name) into v_rows;
    if v_rows > 0 then
        raise exception 'month % has % cancellations not rolled up yet (one arrived during the export): run the rollup, then archive again',
            p_month, v_rows using errcode = '55000';
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

    execute pg_catalog.format('drop table meter.%I', v_check.partition_name);

    return query select * from meter.event_archives a where a.period_start = v_check.range_from;
end;
$$;

comment on function meter.events_archive(text, text, text, bigint, integer, interval) is
    'Archives a verified UTC month of events: keeps each key''s content digest, records the file, detaches and drops the partition.';
revoke all on function meter.events_archive(text, text, text, bigint, integer, interval) from public;
