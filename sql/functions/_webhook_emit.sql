-- meter._webhook_emit(type, key, payload): records an outgoing webhook message for an occurrence,
-- in the caller's transaction, with one delivery per enabled endpoint that takes the type. The
-- message id is msg_ + the first 32 hex digits of the SHA-256 of the type and key, so the same
-- occurrence emitted again (a retried transaction, a second close) is the same message and is not
-- delivered twice. Returns the message id, or null when that occurrence was already recorded.
-- NOTIFY meter_webhooks_out wakes the delivery worker after the commit.
create or replace function meter._webhook_emit(p_type text, p_key text, p_payload jsonb)
returns text
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id text;
begin
    if p_type is null or p_key is null or p_payload is null then
        raise exception 'type, key and payload are required' using errcode = '22023';
    end if;
    v_id := 'msg_' || pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(p_type || E'\n' || p_key, 'UTF8')), 'hex'), 32);
    insert into meter.webhook_messages (id, type, payload) values (v_id, p_type, p_payload) on conflict do nothing;
    if not found then
        return null;
    end if;
    insert into meter.webhook_deliveries (message_id, endpoint_id)
    select v_id, e.id from meter.webhook_endpoints e where e.enabled and p_type = any (e.event_types);
    if found then
        perform pg_catalog.pg_notify('meter_webhooks_out', '');
    end if;
    return v_id;
end;
$$;

comment on function meter._webhook_emit(text, text, jsonb) is
    'Records an outgoing webhook message (once per occurrence key) and its deliveries to the endpoints taking its type.';
revoke all on function meter._webhook_emit(text, text, jsonb) from public;
