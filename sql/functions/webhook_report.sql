-- meter.webhook_report(message, endpoint, claim_token, status, error, give_up_after, base, cap):
-- the outcome of one delivery attempt. A 2xx (status 200-299) is delivered. Anything else (another
-- status, or null: no answer) goes back to pending after an exponential backoff with jitter
-- (base x 2^(attempts-1), at most cap, times 0.5-1.0), or dead once the delivery is older than
-- give_up_after (since it was created or last re-driven: the receiver is down for good;
-- meter.webhook_redrive sends the dead again).
-- Returns the new state, or 'stale' when the claim is no longer this caller's.
create or replace function meter.webhook_report(
    p_message_id    text,
    p_endpoint_id   bigint,
    p_claim_token   bigint,
    p_status        integer,
    p_error         text default null,
    p_give_up_after interval default '3 days',
    p_base          interval default '5 seconds',
    p_cap           interval default '1 hour')
returns text
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
    with done as (
        update meter.webhook_deliveries d
        set state = case when p_status between 200 and 299 then 'delivered'
                         when d.created_at < pg_catalog.now() - p_give_up_after then 'dead'
                         else 'pending' end,
            delivered_at = case when p_status between 200 and 299 then pg_catalog.now() end,
            next_attempt_at = pg_catalog.now()
                              + least(p_cap, p_base * pg_catalog.power(2, least(greatest(d.attempts - 1, 0), 30)))
                                * (0.5 + pg_catalog.random() / 2),
            last_status = p_status,
            last_error = pg_catalog.left(p_error, 1000),
            claim_token = null,
            claimed_at = null
        where d.message_id = p_message_id and d.endpoint_id = p_endpoint_id and d.claim_token = p_claim_token
        returning d.state
    )
    select coalesce((select state from done), 'stale');
$$;

comment on function meter.webhook_report(text, bigint, bigint, integer, text, interval, interval, interval) is
    'Records a webhook delivery attempt: delivered on 2xx, else retried with backoff and jitter, dead after the give-up time.';
revoke all on function meter.webhook_report(text, bigint, bigint, integer, text, interval, interval, interval) from public;
