-- meter.sync_status: per customer and meter, where its hours stand in the billing sync.
-- For operators and analysts in psql and for `meterctl sync status`.
--
--   linked              a subscription item exists (unlinked hours wait for provisioning)
--   pending             hours with a revision not yet acknowledged by the engine
--   in_flight           hours being sent now (claimed by a worker)
--   synced              hours whose latest revision the engine acknowledged
--   dead                hours that exhausted their attempts: `meterctl sync retry` re-drives them
--   closed              hours changed after their period was closed on both sides (the engine
--                       refuses them; our next invoice carries the change as an adjustment)
--   oldest_unsynced_age how long the longest-waiting hour has had unsynced changes
--   last_error          the most recent failure among this pair's hours
create or replace view meter.sync_status as
select c.external_id as customer,
       m.code as meter,
       o.customer_id,
       o.meter_id,
       l.subscription_item_id,
       (l.subscription_item_id is not null) as linked,
       pg_catalog.count(*) filter (where o.state = 'pending') as pending,
       pg_catalog.count(*) filter (where o.state = 'in_flight') as in_flight,
       pg_catalog.count(*) filter (where o.state = 'synced') as synced,
       pg_catalog.count(*) filter (where o.state = 'dead') as dead,
       pg_catalog.count(*) filter (where o.state = 'closed') as closed,
       pg_catalog.max(pg_catalog.now() - o.unsynced_since) as oldest_unsynced_age,
       pg_catalog.max(o.synced_at) as last_synced_at,
       (pg_catalog.array_agg(o.last_error order by o.last_attempt_at desc)
            filter (where o.last_error is not null))[1] as last_error
from meter.sync_outbox o
join meter.customers c on c.id = o.customer_id
join meter.meters m on m.id = o.meter_id
left join meter.billing_links l on l.customer_id = o.customer_id and l.meter_id = o.meter_id
group by c.external_id, m.code, o.customer_id, o.meter_id, l.subscription_item_id;

comment on view meter.sync_status is
    'Billing sync per customer and meter: hours pending, in flight, synced, dead; oldest unsynced age.';

grant select on meter.sync_status to meter_analyst;
