-- meter.api_keys_public: API keys without their hashes, for listings and for analysts.
create or replace view meter.api_keys_public as
select id, name, prefix, created_at, revoked_at, revoked_at is null as active
from meter.api_keys;

comment on view meter.api_keys_public is 'API keys without hashes: id, name, prefix, status.';

grant select on meter.api_keys_public to meter_analyst;
