-- meter.api_key_create(name, prefix, key_hash, scopes, customers): registers a new API key and
-- returns its id.
--
-- The caller (meterctl keys create) generates the token from a CSPRNG and shows it once; it sends
-- only the token's SHA-256 and its first 12 characters (for listings), so the token itself never
-- reaches Postgres: no statement log, pg_stat_activity or pg_stat_statements can show it.
-- scopes: any of ingest, cancel, read (default all three); customers: external ids the key may
-- act for (default NULL: every customer), each of which must exist (22023 otherwise).
-- Operators only, no grant.
create or replace function meter.api_key_create(
    p_name      text,
    p_prefix    text,
    p_key_hash  bytea,
    p_scopes    text[] default array['ingest', 'cancel', 'read'],
    p_customers text[] default null
)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_ids     bigint[];
    v_unknown text;
    v_id      bigint;
begin
    if p_scopes is null or pg_catalog.cardinality(p_scopes) = 0
       or not (p_scopes <@ array['ingest', 'cancel', 'read']) then
        raise exception 'scopes must be one or more of ingest, cancel, read; got %', coalesce(p_scopes::text, 'null')
            using errcode = '22023';
    end if;
    if p_customers is not null then
        select x into v_unknown from pg_catalog.unnest(p_customers) x
        where not exists (select 1 from meter.customers c where c.external_id = x) limit 1;
        if found then
            raise exception 'unknown customer %', pg_catalog.quote_literal(v_unknown) using errcode = '22023';
        end if;
        select pg_catalog.array_agg(distinct c.id order by c.id) into v_ids
        from meter.customers c where c.external_id = any (p_customers);
    end if;
    insert into meter.api_keys (name, prefix, key_hash, scopes, customer_ids)
    values (p_name, p_prefix, p_key_hash,
            (select pg_catalog.array_agg(distinct s order by s) from pg_catalog.unnest(p_scopes) s), v_ids)
    returning id into v_id;
    return v_id;
end;
$$;

comment on function meter.api_key_create(text, text, bytea, text[], text[]) is
    'Stores a new API key (hash and prefix only) with its scopes and customers; returns its id.';

revoke all on function meter.api_key_create(text, text, bytea, text[], text[]) from public;
