-- billing_mock.emit_thin_event(type, related_object, data, at): record an API v2 event
-- ("v2.core.event", e.g. v1.billing.meter.error_report_triggered) and queue its delivery to every
-- webhook endpoint that names the type ('*' does not cover v2 events). The endpoint receives the thin notification (the
-- event without data); the receiver fetches GET /v2/core/events/{id} for data. Returns the id.
-- (Stripe delivers thin events to event destinations; the mock uses its webhook endpoints.)
create or replace function billing_mock.emit_thin_event(p_type text, p_related jsonb, p_data jsonb, p_at bigint)
returns text
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id text := billing_mock.new_id('evt');
begin
    insert into billing_mock.objects (id, object, data)
    values (v_id, 'v2.core.event', jsonb_build_object(
        'id', v_id, 'object', 'v2.core.event', 'type', p_type,
        'created', pg_catalog.to_char(pg_catalog.to_timestamp(p_at) at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'livemode', false, 'context', null, 'reason', null, 'changes', null, 'snapshot_event', null,
        'related_object', p_related, 'data', p_data));
    perform billing_mock.queue_deliveries(v_id, p_type, false);  -- named only: '*' means every v1 snapshot event
    return v_id;
end;
$$;

comment on function billing_mock.emit_thin_event(text, jsonb, jsonb, bigint) is
    'Records an API v2 event and queues its thin notification to every enabled webhook endpoint subscribed to its type; returns its id.';
