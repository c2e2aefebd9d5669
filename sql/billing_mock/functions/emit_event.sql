-- billing_mock.emit_event(type, object, at): record an API event and queue its delivery to every
-- webhook endpoint that subscribed to the type (or to '*'). Returns the event id.
create or replace function billing_mock.emit_event(p_type text, p_object jsonb, p_at bigint)
returns text
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id text := billing_mock.new_id('evt');
begin
    insert into billing_mock.objects (id, object, data)
    values (v_id, 'event', jsonb_build_object(
        'id', v_id, 'object', 'event', 'api_version', '2024-06-20', 'type', p_type,
        'created', p_at, 'livemode', false, 'pending_webhooks', 0,
        'request', jsonb_build_object('id', null, 'idempotency_key', null),
        'data', jsonb_build_object('object', p_object)));
    perform billing_mock.queue_deliveries(v_id, p_type, true);
    return v_id;
end;
$$;

comment on function billing_mock.emit_event(text, jsonb, bigint) is
    'Records an API event and queues its delivery to every enabled webhook endpoint subscribed to its type; returns its id.';
