-- meter._redelivery_customer(): BEFORE INSERT trigger of meter.event_redeliveries, for a row
-- written without its customer (its rollup shard, decision 125): finds it from the event (by id
-- and occurred_at: its partition), or from the event's key when the event is archived.
--
-- Ingest writes customer_id itself; this covers an ingest still on the functions before
-- migration 0025 (the moments between the migration and the functions' re-apply), which would
-- otherwise fail on the column's NOT NULL. Fires only for rows without it (WHEN clause).
create or replace function meter._redelivery_customer()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    select e.customer_id into new.customer_id
    from meter.events e
    where e.id = new.event_id and (new.occurred_at is null or e.occurred_at = new.occurred_at);
    if new.customer_id is null then
        select k.customer_id into new.customer_id from meter.event_keys k where k.event_id = new.event_id;
    end if;
    return new;
end;
$$;

comment on function meter._redelivery_customer() is
    'Trigger: fills event_redeliveries.customer_id from the event (or its key) when a row comes without it.';

revoke all on function meter._redelivery_customer() from public;
