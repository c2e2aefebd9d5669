-- meter.sync_backlog: the whole billing sync in one row, cheap enough to poll every second (each
-- figure reads one partial index). Feeds the meter_sync_* gauges.
create or replace view meter.sync_backlog as
select (select pg_catalog.count(*) from meter.sync_outbox where state = 'pending') as pending,
       (select pg_catalog.count(*) from meter.sync_outbox where state = 'in_flight') as in_flight,
       (select pg_catalog.count(*) from meter.sync_outbox where state = 'dead') as dead,
       coalesce(extract(epoch from pg_catalog.now()
                - (select pg_catalog.min(unsynced_since) from meter.sync_outbox where unsynced_since is not null)),
                0)::numeric(20, 3) as oldest_unsynced_seconds,
       (select pg_catalog.count(*) from meter.webhook_events where processed_at is null) as webhooks_unprocessed;

comment on view meter.sync_backlog is
    'Billing sync totals (pending, in flight, dead, oldest unsynced seconds, unprocessed webhooks).';

grant select on meter.sync_backlog to meter_analyst;
