-- meter.event_cancel(cancellations, api_key_hash): retract stored events, idempotently.
--
-- Guarantees
--   * Events are found by their key in meter.event_keys (every event ever stored).
--   * Exactly once per event: the primary key of meter.event_cancellations. Cancelling again (a
--     retry, or a concurrent request) answers already_cancelled and changes nothing.
--   * The event row is never touched: its idempotency key stays taken, so a cancelled event
--     cannot come back under the same key (a retry of it is a duplicate, a different event under
--     the key a conflict). meter.rollup_run() subtracts the event once.
--   * Per-element verdicts, by position:
--       cancelled          - retracted now
--       already_cancelled  - retracted before (or earlier in this request)
--       rejected           - unknown_customer, customer_not_allowed (the key is restricted to
--                            other customers), event_not_found (no committed event under this
--                            key: it may still be in flight; retrying later is safe), or
--                            event_archived (the event's month was archived: meterctl events
--                            archive; its invoice is final, a cancellation cannot change it)
--   * Sends no NOTIFY, for the reason given in meter.event_ingest: the service wakes the rollup
--     after its commit (EventsNotifier); the rollup polls every second anyway.
--
-- Input: a JSON array of objects {customer, idempotency_key, reason?}; the HTTP layer has checked
-- their syntax. api_key_hash: as for meter.event_ingest (SQLSTATE 28000 when not a live key, 42501
-- when the key lacks the cancel scope).
create or replace function meter.event_cancel(
    p_cancellations jsonb,
    p_api_key_hash  bytea default null
)
returns setof meter.cancel_verdict
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_verdicts meter.cancel_verdict[];
    v_scopes   text[];
    v_allowed  bigint[];  -- the key's customers; NULL = every customer
begin
    if p_cancellations is null or pg_catalog.jsonb_typeof(p_cancellations) <> 'array' then
        raise exception 'meter.event_cancel: p_cancellations must be a JSON array'
            using errcode = '22023';
    end if;
    if pg_catalog.current_setting('synchronous_commit') = 'off' then
        perform pg_catalog.set_config('synchronous_commit', 'on', true);
    end if;
    if p_api_key_hash is not null then
        select k.scopes, k.customer_ids into v_scopes, v_allowed from meter.api_keys k
        where k.key_hash = p_api_key_hash and k.revoked_at is null;
        if not found then
            raise exception 'unknown or revoked API key' using errcode = '28000';
        end if;
        if not ('cancel' = any (v_scopes)) then
            raise exception 'this API key may not cancel events (its scopes: %)', pg_catalog.array_to_string(v_scopes, ', ')
                using errcode = '42501', hint = 'create a key with the cancel scope: meterctl keys create --scope cancel';
        end if;
    end if;

    with input as (
        select (i.ord - 1)::integer as ord, i.customer, i.idempotency_key, i.reason
        from rows from (pg_catalog.jsonb_to_recordset(p_cancellations)
                        as (customer text, idempotency_key text, reason text))
             with ordinality as i(customer, idempotency_key, reason, ord)
    ),
    found as (
        select i.*, c.id as customer_id, e.event_id,
               c.id is not null and v_allowed is not null and not (c.id = any (v_allowed)) as not_allowed,
               -- archived (its key kept, its row gone with its month) and not cancelled before:
               -- it can no longer be cancelled
               e.event_id is not null and ev.id is null
               and not exists (select 1 from meter.event_cancellations x where x.event_id = e.event_id) as archived,
               ev.id is not null
               and pg_catalog.row_number() over (partition by ev.id order by i.ord) = 1 as first_of_event
        from input i
        left join meter.customers c on c.external_id = i.customer
        -- the key table: every event ever stored, archived months included
        left join meter.event_keys e on e.customer_id = c.id and e.idempotency_key = i.idempotency_key
                                     and (v_allowed is null or c.id = any (v_allowed))
        -- the event row itself, in its month's partition. Reading meter.events also takes its
        -- share lock, which an archive's DETACH waits for (and which waits for the DETACH): a
        -- cancellation either commits before the month is detached, and the archive then
        -- refuses (a cancellation not rolled up), or sees the month archived.
        left join meter.events ev on ev.id = e.event_id and ev.occurred_at = e.occurred_at
    ),
    inserted as (
        insert into meter.event_cancellations (event_id, reason)
        select f.event_id, f.reason from found f
        where f.first_of_event
        order by f.event_id  -- one lock order for concurrent batches: no deadlock
        on conflict (event_id) do nothing
        returning event_id
    )
    select pg_catalog.array_agg(row(
           f.ord,
           case
               when f.customer_id is null or f.not_allowed or f.event_id is null or f.archived then 'rejected'
               when f.first_of_event and n.event_id is not null then 'cancelled'
               else 'already_cancelled'
           end,
           f.event_id,
           case
               when f.customer_id is null then 'unknown_customer'
               when f.not_allowed then 'customer_not_allowed'
               when f.event_id is null then 'event_not_found'
               when f.archived then 'event_archived'
           end,
           case
               when f.customer_id is null or f.not_allowed then 'customer'
               when f.event_id is null or f.archived then 'idempotency_key'
           end,
           case
               when f.customer_id is null then
                   pg_catalog.format('no customer with external id %L', f.customer)
               when f.not_allowed then
                   pg_catalog.format('this API key may not act for customer %L', f.customer)
               when f.event_id is null then
                   pg_catalog.format('no stored event of customer %L has idempotency key %L',
                                     f.customer, f.idempotency_key)
               when f.archived then
                   pg_catalog.format('the event of customer %L with idempotency key %L belongs to an archived month; its invoice is final',
                                     f.customer, f.idempotency_key)
           end)::meter.cancel_verdict order by f.ord)
      into v_verdicts
    from found f
    left join inserted n on f.first_of_event and n.event_id = f.event_id;

    return query select * from pg_catalog.unnest(v_verdicts);
end;
$$;

comment on function meter.event_cancel(jsonb, bytea) is
    'Cancels stored events by (customer, idempotency_key), idempotently; one verdict per input element.';

revoke all on function meter.event_cancel(jsonb, bytea) from public;
grant execute on function meter.event_cancel(jsonb, bytea) to meter_ingest;
