-- billing_mock.new_id(prefix): a Stripe-like object id, e.g. cus_4f1c9a0b2d3e4f5a6b7c8d9e.
create or replace function billing_mock.new_id(p_prefix text)
returns text
language sql
volatile
as $$
    select p_prefix || '_' || pg_catalog.substr(pg_catalog.md5(pg_catalog.gen_random_uuid()::text), 1, 24);
$$;
