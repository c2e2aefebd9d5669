-- meter.webhook_endpoint_set(id, url, event_types, secret, enabled): registers an outgoing webhook
-- endpoint (id null: a new one, returned) or changes one: a new secret makes the old one the
-- previous secret (messages are then signed with both until the next rotation, so a receiver can
-- switch without losing any); enabled false stops new deliveries to it (pending ones are kept and
-- go out again once it is enabled). Refusals: an unknown id, a URL that is not http(s), an event
-- type meter does not send, a secret that is not whsec_ + base64 (22023).
create or replace function meter.webhook_endpoint_set(
    p_id          bigint,
    p_url         text default null,
    p_event_types text[] default null,
    p_secret      text default null,
    p_enabled     boolean default null)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id bigint;
begin
    if p_url is not null and (p_url !~ '^https?://[^[:space:]]+$' or pg_catalog.length(p_url) > 2048) then
        raise exception 'url must be an http or https URL' using errcode = '22023';
    end if;
    if p_event_types is not null and (pg_catalog.cardinality(p_event_types) = 0 or not p_event_types <@ array[
            'alert.triggered', 'invoice.closed', 'usage.late_after_close', 'sync.dead_letter', 'limit.reached']) then
        raise exception 'event types must be among alert.triggered, invoice.closed, usage.late_after_close, sync.dead_letter, limit.reached; got %',
            p_event_types using errcode = '22023';
    end if;
    if p_secret is not null and p_secret !~ '^whsec_[A-Za-z0-9+/]{32,88}={0,2}$' then
        raise exception 'a signing secret is whsec_ followed by the base64 of 24 to 64 bytes' using errcode = '22023';
    end if;
    if p_id is null then
        if p_url is null or p_event_types is null or p_secret is null then
            raise exception 'a new endpoint needs a url, event types and a secret' using errcode = '22023';
        end if;
        insert into meter.webhook_endpoints (url, event_types, secret, enabled)
        values (p_url, p_event_types, p_secret, coalesce(p_enabled, true))
        returning id into v_id;
        return v_id;
    end if;
    update meter.webhook_endpoints e
    set url = coalesce(p_url, e.url),
        event_types = coalesce(p_event_types, e.event_types),
        previous_secret = case when p_secret is not null and p_secret <> e.secret then e.secret else e.previous_secret end,
        rotated_at = case when p_secret is not null and p_secret <> e.secret then pg_catalog.now() else e.rotated_at end,
        secret = coalesce(p_secret, e.secret),
        enabled = coalesce(p_enabled, e.enabled),
        disabled_at = case when p_enabled is false and e.enabled then pg_catalog.now()
                           when p_enabled is true then null else e.disabled_at end
    where e.id = p_id
    returning e.id into v_id;
    if v_id is null then
        raise exception 'no webhook endpoint with id %', p_id using errcode = '22023';
    end if;
    if p_enabled is true then perform pg_catalog.pg_notify('meter_webhooks_out', ''); end if;
    return v_id;
end;
$$;

comment on function meter.webhook_endpoint_set(bigint, text, text[], text, boolean) is
    'Registers or changes an outgoing webhook endpoint (a new secret keeps the old one as previous: both sign until the next rotation).';
revoke all on function meter.webhook_endpoint_set(bigint, text, text[], text, boolean) from public;
