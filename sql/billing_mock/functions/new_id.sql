-- billing_mock.new_id(prefix): a Stripe-like object id, e.g. cus_4f1c9a0b2d3e4f5a6b7c8d9e.
create or replace function billing_mock.new_id(p_prefix text)
returns text
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
    select p_prefix || '_' || pg_catalog.substr(pg_catalog.md5(pg_catalog.gen_random_uuid()::text), 1, 24);
$$;

comment on function billing_mock.new_id(text) is
    'A Stripe-like object id with the given prefix, e.g. cus_4f1c9a0b2d3e4f5a6b7c8d9e.';
