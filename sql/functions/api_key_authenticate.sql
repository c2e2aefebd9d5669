-- meter.api_key_authenticate(token): the id of the live API key whose SHA-256 matches `token`,
-- or NULL when the token is unknown or revoked.
--
-- Tokens are never stored, only their SHA-256 (meter.api_keys.key_hash), so a leaked table does
-- not leak usable keys. Revocation is immediate: every request calls this function; nothing is
-- cached in front of it.
create or replace function meter.api_key_authenticate(p_token text)
returns bigint
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
    select k.id
    from meter.api_keys k
    where k.key_hash = pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8'))
      and k.revoked_at is null
$$;

comment on function meter.api_key_authenticate(text) is
    'Returns the live API key id for a bearer token, or NULL (unknown or revoked).';

revoke all on function meter.api_key_authenticate(text) from public;
grant execute on function meter.api_key_authenticate(text) to meter_ingest;
