-- meter._outbox_requeue(customers, meters, hours, revisions): billed hours whose rollup changed
-- get their new revision in meter.sync_outbox, as rollup_run's own steps do (parallel arrays,
-- one statement; meters without a billing price are skipped). Returns the rows written.
--
-- The state rule: an hour in flight stays in flight (its send reports, then the newer revision
-- goes); an hour parked dead by the give-up timer with an uncertain request stays dead (an
-- operator's sync_retry decides); any other goes back to pending, due now when it was synced,
-- dead or closed. The outbox revision never goes down (greatest: it may run ahead of the rollup's).
create or replace function meter._outbox_requeue(
    p_customers bigint[],
    p_meters    bigint[],
    p_hours     timestamptz[],
    p_revisions bigint[])
returns bigint
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
    with written as (
        insert into meter.sync_outbox as o (customer_id, meter_id, hour, revision)
        select k.c, k.m, k.h, pg_catalog.max(k.r)
        from rows from (pg_catalog.unnest(p_customers), pg_catalog.unnest(p_meters), pg_catalog.unnest(p_hours),
                        pg_catalog.unnest(p_revisions)) as k(c, m, h, r)
        where exists (select 1 from meter.billing_prices p where p.meter_id = k.m)
        -- (an hour named twice, by two steps of a run, is one row with the larger revision)
        group by k.c, k.m, k.h
        -- in key order, as the sync's acknowledgements lock them: two writers of overlapping
        -- rows in different orders could each wait on the other (40P01)
        order by k.c, k.m, k.h
        on conflict (customer_id, meter_id, hour) do update
            set revision        = greatest(o.revision + 1, excluded.revision),
                state           = case when o.state = 'in_flight' then 'in_flight'
                                       when o.state = 'dead' and o.sending_key is not null then 'dead'
                                       else 'pending' end,
                attempts        = case when o.state = 'dead' and o.sending_key is not null then o.attempts
                                       when o.state in ('dead', 'closed') then 0 else o.attempts end,
                next_attempt_at = case when o.state = 'dead' and o.sending_key is not null then o.next_attempt_at
                                       when o.state in ('synced', 'dead', 'closed') then pg_catalog.now()
                                       else o.next_attempt_at end,
                unsynced_since  = coalesce(o.unsynced_since, pg_catalog.now())
        returning 1
    )
    select pg_catalog.count(*) from written
$$;

comment on function meter._outbox_requeue(bigint[], bigint[], timestamptz[], bigint[]) is
    'Gives billed hours whose rollup changed their new outbox revision (pending unless in flight or parked uncertain).';

revoke all on function meter._outbox_requeue(bigint[], bigint[], timestamptz[], bigint[]) from public;
