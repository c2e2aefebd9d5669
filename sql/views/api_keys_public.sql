-- meter.api_keys_public: API keys without their hashes, for listings and for analysts.
create or replace view meter.api_keys_public as
select k.id, k.name, k.prefix, k.created_at, k.revoked_at, k.revoked_at is null as active, k.scopes,
       (select pg_catalog.array_agg(c.external_id order by c.external_id) from meter.customers c
        where c.id = any (k.customer_ids)) as customers
from meter.api_keys k;

comment on view meter.api_keys_public is 'API keys without hashes: id, name, prefix, status, scopes, customers (NULL = every one).';

grant select on meter.api_keys_public to meter_analyst;
