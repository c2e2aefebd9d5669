-- meter.api_key_authorize(key_hash, scope, customer): whether the key whose SHA-256 is `key_hash`
-- may use `scope` (ingest, cancel, read) for the customer with external id `customer` (NULL: no
-- customer named yet). Returns 'ok', 'unauthorized' (unknown or revoked key),
-- 'insufficient_scope' (a live key without the scope) or 'customer_not_allowed' (the key is
-- restricted to other customers). Used by GET /v1/usage; event_ingest and event_cancel check the
-- same inline, per element.
create or replace function meter.api_key_authorize(p_key_hash bytea, p_scope text, p_customer text)
returns text
language sql
stable
security definer
set search_path = pg_catalog, pg_temp
as $$
    select case
               when k.id is null then 'unauthorized'
               when not (p_scope = any (k.scopes)) then 'insufficient_scope'
               when p_customer is not null and k.customer_ids is not null
                    and not exists (select 1 from meter.customers c
                                    where c.external_id = p_customer and c.id = any (k.customer_ids))
                   then 'customer_not_allowed'
               else 'ok'
           end
    from (select 1) as one
    left join meter.api_keys k on k.key_hash = p_key_hash and k.revoked_at is null
$$;

comment on function meter.api_key_authorize(bytea, text, text) is
    'ok, unauthorized, insufficient_scope or customer_not_allowed for a key hash, a scope and a customer.';

revoke all on function meter.api_key_authorize(bytea, text, text) from public;
grant execute on function meter.api_key_authorize(bytea, text, text) to meter_ingest;
