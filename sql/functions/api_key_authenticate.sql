-- meter.api_key_authenticate(key_hash): the id of the live API key whose SHA-256 is `key_hash`,
-- or NULL when the key is unknown or revoked.
--
-- Tokens are never stored, only their SHA-256 (meter.api_keys.key_hash), so a leaked table does
-- not leak usable keys; and never sent: the service hashes the bearer token and sends the hash,
-- so no statement log, pg_stat_activity or pg_stat_statements of any cluster can show a token.
-- Revocation is immediate: every request calls this function; nothing is cached in front of it.
create or replace function meter.api_key_authenticate(p_key_hash bytea)
returns bigint
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
    select k.id
    from meter.api_keys k
    where k.key_hash = p_key_hash
      and k.revoked_at is null
$$;

comment on function meter.api_key_authenticate(bytea) is
    'Returns the live API key id for the SHA-256 of a bearer token, or NULL (unknown or revoked).';

revoke all on function meter.api_key_authenticate(bytea) from public;
grant execute on function meter.api_key_authenticate(bytea) to meter_ingest;
