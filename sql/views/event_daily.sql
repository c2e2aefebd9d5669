-- meter.event_daily: per customer, meter and UTC day (of occurred_at), the raw events stored and
-- the redeliveries turned away (duplicates, conflicts). For analysts in psql (role meter_analyst).
create or replace view meter.event_daily as
with stored as (
    select e.customer_id, e.meter_id, (e.occurred_at at time zone 'UTC')::date as day,
           pg_catalog.count(*) as events, pg_catalog.sum(e.value) as total_value
    from meter.events e
    group by 1, 2, 3
),
redelivered as (
    select e.customer_id, e.meter_id, (e.occurred_at at time zone 'UTC')::date as day,
           pg_catalog.count(*) filter (where r.verdict = 'duplicate') as duplicates,
           pg_catalog.count(*) filter (where r.verdict = 'conflict')  as conflicts
    from meter.event_redeliveries r
    join meter.events e on e.id = r.event_id
    group by 1, 2, 3
)
select c.external_id               as customer,
       m.code                      as meter,
       s.day,
       s.events,
       s.total_value,
       coalesce(r.duplicates, 0)   as duplicates,
       coalesce(r.conflicts, 0)    as conflicts
from stored s
join meter.customers c on c.id = s.customer_id
join meter.meters m on m.id = s.meter_id
left join redelivered r using (customer_id, meter_id, day);

comment on view meter.event_daily is
    'Raw events per customer, meter and UTC day, with duplicate and conflicting redeliveries.';

grant select on meter.event_daily to meter_analyst;
