-- meter.ingest_events_with_key(token, events, max_future, max_past): authenticate, then ingest, in
-- one round trip. This is what the HTTP service calls for every request with a valid body.
--
-- Raises SQLSTATE 28000 (invalid_authorization_specification) when the token is unknown or
-- revoked; nothing is stored then. Otherwise exactly meter.ingest_events(): see its guarantees.
create or replace function meter.ingest_events_with_key(
    p_token      text,
    p_events     jsonb,
    p_max_future interval default interval '5 minutes',
    p_max_past   interval default interval '35 days'
)
returns setof meter.ingest_verdict
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if meter.authenticate_api_key(p_token) is null then
        raise exception 'unknown or revoked API key' using errcode = '28000';
    end if;
    return query select * from meter.ingest_events(p_events, p_max_future, p_max_past);
end;
$$;

comment on function meter.ingest_events_with_key(text, jsonb, interval, interval) is
    'Authenticates an API key (SQLSTATE 28000 when refused), then meter.ingest_events().';

revoke all on function meter.ingest_events_with_key(text, jsonb, interval, interval) from public;
grant execute on function meter.ingest_events_with_key(text, jsonb, interval, interval) to meter_ingest;
