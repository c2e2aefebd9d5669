-- meter.webhook_receive(event_id, type, created, payload): store a verified billing webhook once.
--
-- Called by POST /webhooks/billing after the signature is verified (never before: nothing
-- unauthenticated is stored). Returns true for a new event, false for a redelivery (already
-- stored: acknowledged and dropped). Processing happens later, in meter.webhook_process(), so the
-- endpoint answers at once; meter_webhooks is NOTIFied at commit.
create or replace function meter.webhook_receive(
    p_event_id text,
    p_type     text,
    p_created  timestamptz,
    p_payload  jsonb)
returns boolean
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into meter.webhook_events (event_id, type, created, payload)
    values (p_event_id, p_type, p_created, p_payload)
    on conflict (event_id) do nothing;
    if not found then
        return false;
    end if;
    perform pg_catalog.pg_notify('meter_webhooks', '');
    return true;
end;
$$;

comment on function meter.webhook_receive(text, text, timestamptz, jsonb) is
    'Stores a verified billing webhook once by event id; false for a redelivery.';

revoke all on function meter.webhook_receive(text, text, timestamptz, jsonb) from public;
