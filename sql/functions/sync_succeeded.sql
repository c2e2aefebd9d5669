-- meter.sync_succeeded(customer, meter, hour, claim_token): the engine acknowledged the send.
--
-- The revision sent becomes the synced revision (never lowered). If a newer revision arrived
-- while the send was in flight, the hour is pending again at once; otherwise it is synced.
-- Returns the new state, or 'stale' when the claim is no longer this caller's (its lease expired
-- and another worker took the hour over: that worker repeats the same request and reports it).
create or replace function meter.sync_succeeded(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_hour        timestamptz,
    p_claim_token bigint)
returns text
language sql
volatile
set search_path = pg_catalog, pg_temp
as $$
    with done as (
        update meter.sync_outbox o
        set synced_revision  = greatest(o.synced_revision, o.sending_revision),
            synced_quantity  = o.sending_quantity,
            synced_lines     = o.sending_lines,
            synced_at        = pg_catalog.now(),
            state            = case when o.revision > greatest(o.synced_revision, o.sending_revision)
                                    then 'pending' else 'synced' end,
            next_attempt_at  = pg_catalog.now(),
            -- still behind: the newer revision arrived after this claim was made
            unsynced_since   = case when o.revision > greatest(o.synced_revision, o.sending_revision)
                                    then o.claimed_at end,
            attempts         = 0,
            last_error       = null,
            claim_token      = null,
            claimed_by       = null,
            claimed_at       = null,
            sending_revision = null,
            sending_quantity = null,
            sending_key      = null,
            sending_lines    = null
        where o.customer_id = p_customer_id and o.meter_id = p_meter_id and o.hour = p_hour
          and o.claim_token = p_claim_token
        returning o.state
    )
    select coalesce((select state from done), 'stale');
$$;

comment on function meter.sync_succeeded(bigint, bigint, timestamptz, bigint) is
    'Records an acknowledged send: synced_revision moves forward; pending again if a newer revision exists.';

revoke all on function meter.sync_succeeded(bigint, bigint, timestamptz, bigint) from public;
