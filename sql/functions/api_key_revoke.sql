-- meter.api_key_revoke(key): revokes the key named by id (digits) or by its prefix; returns the
-- number of keys newly revoked (0 when already revoked or unknown). Effective for the very next
-- request: authentication reads meter.api_keys every time.
create or replace function meter.api_key_revoke(p_key text)
returns integer
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
    with revoked as (
        update meter.api_keys k
        set revoked_at = pg_catalog.now()
        where k.revoked_at is null
          and (k.prefix = p_key or (p_key ~ '^[0-9]{1,18}$' and k.id = p_key::bigint))
        returning 1
    )
    select pg_catalog.count(*)::integer from revoked
$$;

comment on function meter.api_key_revoke(text) is
    'Revokes an API key by id or prefix; returns how many were newly revoked.';

revoke all on function meter.api_key_revoke(text) from public;
