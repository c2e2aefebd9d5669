-- billing_mock.queue_deliveries(event_id, type, wildcard): queue an event's delivery to every
-- enabled webhook endpoint subscribed to its type, or also to '*' when `wildcard` (v1 snapshot
-- events; '*' does not cover v2 thin events). Returns the number of deliveries queued.
create or replace function billing_mock.queue_deliveries(p_event_id text, p_type text, p_wildcard boolean)
returns integer
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
    with queued as (
        insert into billing_mock.deliveries (event_id, endpoint_id)
        select p_event_id, e.id from billing_mock.objects e
        where e.object = 'webhook_endpoint' and e.data ->> 'status' = 'enabled'
          and (e.data -> 'enabled_events' ? p_type or (p_wildcard and e.data -> 'enabled_events' ? '*'))
        returning 1
    )
    select pg_catalog.count(*)::integer from queued;
$$;

comment on function billing_mock.queue_deliveries(text, text, boolean) is
    'Queues an event''s delivery to every enabled webhook endpoint subscribed to its type (and to ''*'' when wildcard).';
