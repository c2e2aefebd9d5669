-- meter.sync_failed(customer, meter, hour, claim_token, error, definitive, max_attempts, base, cap,
-- give_up_after):
-- a send failed.
--
-- definitive = the engine answered that it did not apply the request (a 4xx other than 409/429):
-- the uncertain request is forgotten and the next attempt sends the then-current revision.
-- Otherwise (timeout, reset, 5xx, 409, 429) the outcome is unknown and the next attempt repeats
-- the very same request (same Idempotency-Key and quantity).
--
-- The next attempt waits min(cap, base * 2^(attempts-1)), scaled by a random factor in [0.5, 1)
-- ("equal jitter": workers that failed together do not retry together).
--
-- When an hour is parked as dead (meter.sync_status, meter_sync_dead_hours) until
-- meter.sync_retry():
--   * after max_attempts consecutive definitive refusals: the engine keeps saying no, and
--     repeating will not change that until someone fixes the cause;
--   * an unknown outcome (an outage, a timeout) never kills an hour by count: an outage of any
--     length drains by itself on recovery. Only an hour unsynced for longer than give_up_after
--     (default 24 h, the lifetime of the engine's idempotency keys) is parked, so that a request
--     repeated after that is a decision of an operator, not a silent retry.
--   * closed, not dead: the engine refuses the hour as before its current period
--     (timestamp_too_early; for a Billing Meter, timestamp_too_far_in_past: more than 35 days
--     back) and we have closed that period ourselves (meter.invoices): the engine
--     invoiced it already, and the change is carried by an adjustment line of our next invoice
--     (meter.period_close). Nothing to retry; reconciliation compares the engine with the usage
--     line frozen at close.
-- Returns the new state, or 'stale' for a claim that is no longer the caller's.
create or replace function meter.sync_failed(
    p_customer_id  bigint,
    p_meter_id     bigint,
    p_hour         timestamptz,
    p_claim_token  bigint,
    p_error        text,
    p_definitive   boolean default false,
    p_max_attempts integer default 10,
    p_base         interval default '1 second',
    p_cap          interval default '5 minutes',
    p_give_up_after interval default '24 hours')
returns text
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
    with failed as (
        update meter.sync_outbox o
        set state            = case when p_definitive and (p_error like '%timestamp_too_early%' or p_error like '%timestamp_too_far_in_past%')
                                         and exists (select 1 from meter.invoices i
                                                     where i.customer_id = o.customer_id
                                                       and o.hour >= i.period_start and o.hour < i.period_end)
                                        then 'closed'
                                    when p_definitive and o.attempts >= greatest(p_max_attempts, 1) then 'dead'
                                    when not p_definitive and o.unsynced_since < pg_catalog.now() - p_give_up_after then 'dead'
                                    else 'pending' end,
            next_attempt_at  = pg_catalog.now()
                               + least(p_cap, p_base * power(2, least(greatest(o.attempts - 1, 0), 30)))
                                 * (0.5 + pg_catalog.random() / 2),
            unsynced_since   = case when p_definitive and (p_error like '%timestamp_too_early%' or p_error like '%timestamp_too_far_in_past%')
                                         and exists (select 1 from meter.invoices i
                                                     where i.customer_id = o.customer_id
                                                       and o.hour >= i.period_start and o.hour < i.period_end)
                                        then null else o.unsynced_since end,
            last_error       = left(coalesce(p_error, 'unknown error'), 2000),
            claim_token      = null,
            claimed_by       = null,
            claimed_at       = null,
            sending_revision = case when p_definitive then null else o.sending_revision end,
            sending_quantity = case when p_definitive then null else o.sending_quantity end,
            sending_key      = case when p_definitive then null else o.sending_key end,
            sending_lines    = case when p_definitive then null else o.sending_lines end
        where o.customer_id = p_customer_id and o.meter_id = p_meter_id and o.hour = p_hour
          and o.claim_token = p_claim_token
        returning o.state, o.customer_id, o.meter_id, o.hour, o.revision, o.last_error
    ),
    -- a dead letter is told to the operators' endpoints (sync.dead_letter), once per hour and revision
    told as (
        select meter._webhook_emit('sync.dead_letter',
                   pg_catalog.format('dead:%s:%s:%s:%s', f.customer_id, f.meter_id, extract(epoch from f.hour)::bigint, f.revision),
                   pg_catalog.jsonb_build_object(
                       'customer', (select c.external_id from meter.customers c where c.id = f.customer_id),
                       'meter', (select m.code from meter.meters m where m.id = f.meter_id),
                       'hour', f.hour, 'revision', f.revision, 'error', f.last_error))
        from failed f where f.state = 'dead'
    )
    select coalesce((select state from failed), 'stale') from (select pg_catalog.count(*) from told) t;
$$;

comment on function meter.sync_failed(bigint, bigint, timestamptz, bigint, text, boolean, integer, interval, interval, interval) is
    'Records a failed send: exponential backoff with jitter; dead after max_attempts refusals or give_up_after of unknown outcomes.';

revoke all on function meter.sync_failed(bigint, bigint, timestamptz, bigint, text, boolean, integer, interval, interval, interval) from public;
