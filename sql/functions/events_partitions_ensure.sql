-- meter.events_partitions_ensure(from, through): make sure meter.events has a partition for every
-- UTC month from the month of `from` to the month of `through`; create those missing. One row
-- per month of the range: its partition, its bounds, whether this call created it.
--
-- Who calls it: `meterctl migrate` (defaults: 35 days back, three months ahead), and `meterctl
-- serve` at start, before it accepts events, and then hourly (from its own max-past window to
-- three months ahead; PartitionWorker). A month thus exists about three months before its
-- first event can; meter.events_partition_runway shows how far ahead the partitions reach, and
-- serve exports it (meter_events_partition_runway_seconds) and logs a warning below 31 days.
-- There is no default partition, on purpose: an event whose month has no partition fails its
-- insert (SQLSTATE 23514, which the service answers 503) instead of landing in a catch-all that
-- could never be detached by month.
--
-- Guarantees
--   * Idempotent, and safe to run concurrently (a transaction-scoped advisory lock serializes
--     callers; the second finds the months created).
--   * Never re-creates an archived month (meter.event_archives): its events are in the archive
--     file, and ingest cannot reach a month that old anyway (archiving requires the late window
--     to have passed).
--   * Creating a partition takes a brief ACCESS EXCLUSIVE lock on meter.events, which waits for
--     in-flight inserts and holds new ones for its duration (milliseconds); lock_timeout (2 s)
--     keeps it from queueing behind a long transaction while blocking ingest: it then fails and
--     the next hourly pass tries again (three months of runway make that harmless).
--   * Names are meter.events_YYYY_MM; bounds are [first instant of the month, of the next) in UTC.
--   * At most 120 months per call (22023 otherwise): a wrong argument must not create thousands.
create or replace function meter.events_partitions_ensure(
    p_from    timestamptz default pg_catalog.now() - interval '35 days',
    p_through timestamptz default pg_catalog.now() + interval '3 months')
returns table (partition_name text, range_from timestamptz, range_to timestamptz, created boolean)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
set lock_timeout = '2s'
as $$
declare
    v_month timestamptz;
    v_last  timestamptz;
begin
    if p_from is null or p_through is null or p_from > p_through then
        raise exception 'events_partitions_ensure: from (%) must be given and not after through (%)', p_from, p_through
            using errcode = '22023';
    end if;
    v_month := pg_catalog.date_trunc('month', p_from);
    v_last := pg_catalog.date_trunc('month', p_through);
    if v_last >= v_month + interval '120 months' then
        raise exception 'events_partitions_ensure: % to % is more than 120 months', p_from, p_through
            using errcode = '22023';
    end if;

    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.events_partitions'));

    while v_month <= v_last loop
        partition_name := 'events_' || pg_catalog.to_char(v_month, 'YYYY_MM');
        range_from := v_month;
        range_to := v_month + interval '1 month';
        created := false;
        if not exists (select 1 from meter.event_archives a where a.period_start = v_month)
           and not exists (
               select 1 from pg_catalog.pg_inherits i
               join pg_catalog.pg_class c on c.oid = i.inhrelid
               join pg_catalog.pg_namespace n on n.oid = c.relnamespace
               where i.inhparent = 'meter.events'::regclass
                 and n.nspname = 'meter' and c.relname = partition_name) then
            execute pg_catalog.format(
                'create table meter.%I partition of meter.events for values from (%L) to (%L)',
                partition_name, range_from, range_to);
            created := true;
        end if;
        return next;
        v_month := range_to;
    end loop;
end;
$$;

comment on function meter.events_partitions_ensure(timestamptz, timestamptz) is
    'Creates the missing monthly partitions of meter.events for [month of from, month of through]; one row per month.';

revoke all on function meter.events_partitions_ensure(timestamptz, timestamptz) from public;
