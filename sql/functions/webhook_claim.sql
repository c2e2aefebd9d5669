-- meter.webhook_claim(worker, limit, lease): hands out due webhook deliveries to one delivery
-- worker, as meter.sync_claim does for the billing outbox: rows locked FOR UPDATE SKIP LOCKED
-- (workers never wait on each other), moved to in_flight with a fresh claim token; a claim whose
-- worker went silent past `lease` is handed out again. Returns what to send: the endpoint's URL
-- and secrets (the previous one during a rotation), the message id, type, payload and creation
-- time (the body is {"type", "timestamp", "data"}, Standard Webhooks' shape).
create or replace function meter.webhook_claim(
    p_worker text,
    p_limit  integer default 50,
    p_lease  interval default '60 seconds')
returns table (message_id text, endpoint_id bigint, url text, secret text, previous_secret text,
               type text, payload text, created_at timestamptz, attempts integer, claim_token bigint)
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
    with due as (
        select d.message_id, d.endpoint_id
        from meter.webhook_deliveries d
        join meter.webhook_endpoints e on e.id = d.endpoint_id and e.enabled
        where (d.state = 'pending' and d.next_attempt_at <= pg_catalog.now())
           or (d.state = 'in_flight' and d.claimed_at < pg_catalog.now() - p_lease)
        order by d.next_attempt_at
        limit greatest(p_limit, 1)
        for update of d skip locked
    ),
    claimed as (
        update meter.webhook_deliveries d
        set state = 'in_flight', claim_token = pg_catalog.nextval('meter.webhook_claim_token'),
            claimed_at = pg_catalog.now(), attempts = d.attempts + 1
        from due
        where d.message_id = due.message_id and d.endpoint_id = due.endpoint_id
        returning d.message_id, d.endpoint_id, d.attempts, d.claim_token
    )
    select c.message_id, c.endpoint_id, e.url, e.secret, e.previous_secret, m.type, m.payload::text, m.created_at,
           c.attempts, c.claim_token
    from claimed c
    join meter.webhook_endpoints e on e.id = c.endpoint_id
    join meter.webhook_messages m on m.id = c.message_id
$$;

comment on function meter.webhook_claim(text, integer, interval) is
    'Claims due outgoing webhook deliveries (SKIP LOCKED) with what to send and a claim token.';
revoke all on function meter.webhook_claim(text, integer, interval) from public;
