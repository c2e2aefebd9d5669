-- meter._webhook_emit(type, key, payload): records an outgoing webhook message for an occurrence,
-- in the caller's transaction, with one delivery per enabled endpoint that takes the type. The
-- message id is msg_ + the first 32 hex digits of the SHA-256 of the type and key, so the same
-- occurrence emitted again (a retried transaction, a second close) is the same message and is not
-- delivered twice. Returns the message id, or null when that occurrence was already recorded.
-- NOTIFY meter_webhooks_out wakes the delivery worker after the commit. meter._webhook_emit_all
-- for one occurrence (the implementation is there, once).
create or replace function meter._webhook_emit(p_type text, p_key text, p_payload jsonb)
returns text
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_type is null or p_key is null or p_payload is null then
        raise exception 'type, key and payload are required' using errcode = '22023';
    end if;
    return (select e.message_id from meter._webhook_emit_all(p_type, array[p_key], array[p_payload]) e);
end;
$$;

comment on function meter._webhook_emit(text, text, jsonb) is
    'Records an outgoing webhook message (once per occurrence key) and its deliveries to the endpoints taking its type.';
revoke all on function meter._webhook_emit(text, text, jsonb) from public;
