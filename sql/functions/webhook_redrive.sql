-- meter.webhook_redrive(endpoint_id): sends the dead deliveries again (of one endpoint, or of all
-- with null), from now, attempts reset; their messages keep their ids, so a receiver that did get
-- one after all deduplicates it. Returns how many.
create or replace function meter.webhook_redrive(p_endpoint_id bigint default null)
returns bigint
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
    with redriven as (
        update meter.webhook_deliveries d
        set state = 'pending', attempts = 0, next_attempt_at = pg_catalog.now(), created_at = pg_catalog.now()
        where d.state = 'dead' and (p_endpoint_id is null or d.endpoint_id = p_endpoint_id)
        returning 1
    )
    select pg_catalog.count(*) from redriven;
$$;

comment on function meter.webhook_redrive(bigint) is 'Sends dead outgoing webhook deliveries again (one endpoint, or all).';
revoke all on function meter.webhook_redrive(bigint) from public;
