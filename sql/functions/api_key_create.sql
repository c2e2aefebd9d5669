-- meter.api_key_create(name, token): registers a new API key and returns its id.
--
-- The caller (meterctl keys create) generates the token from a CSPRNG and shows it once; only its
-- SHA-256 and a 12-character prefix (for listings) are stored. Operators only, no grant.
create or replace function meter.api_key_create(p_name text, p_token text)
returns bigint
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
    insert into meter.api_keys (name, prefix, key_hash)
    values (p_name, pg_catalog.left(p_token, 12), pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8')))
    returning id
$$;

comment on function meter.api_key_create(text, text) is
    'Stores a new API key (hash and prefix only) and returns its id.';

revoke all on function meter.api_key_create(text, text) from public;
