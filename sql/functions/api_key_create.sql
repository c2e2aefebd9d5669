-- meter.api_key_create(name, prefix, key_hash): registers a new API key and returns its id.
--
-- The caller (meterctl keys create) generates the token from a CSPRNG and shows it once; it sends
-- only the token's SHA-256 and its first 12 characters (for listings), so the token itself never
-- reaches Postgres: no statement log, pg_stat_activity or pg_stat_statements can show it.
-- Operators only, no grant.
create or replace function meter.api_key_create(p_name text, p_prefix text, p_key_hash bytea)
returns bigint
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
    insert into meter.api_keys (name, prefix, key_hash)
    values (p_name, p_prefix, p_key_hash)
    returning id
$$;

comment on function meter.api_key_create(text, text, bytea) is
    'Stores a new API key (hash and prefix only) and returns its id.';

revoke all on function meter.api_key_create(text, text, bytea) from public;
