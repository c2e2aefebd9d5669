-- meter.sync_refused(event_id, event): the engine refused, after answering, meter events the sync
-- sent through the v2 stream (a v1.billing.meter.error_report_triggered or .no_meter_found
-- event, fetched in full from GET /v2/core/events/{id} by the service's webhook processor).
--
-- Contract
--   * Each sampled refusal names the event by its identifier, which is the outbox key
--     meter-<customer>-<meter>-<hour epoch>-r<revision> (plus a priced filter's suffix,
--     meter._line_suffix, for a meter priced per filter: a refused line parks its whole hour):
--     that hour, if it was marked synced (or
--     is being sent) at that revision, is parked dead with the engine's code and message, and is
--     no longer counted as synced (synced_revision back to 0, synced_quantity null): never
--     silently synced. `meterctl sync retry` sends it again once the cause is fixed.
--   * An identifier that is not ours, or an hour already past that revision, changes nothing.
--   * Stripe samples refusals (a few per code): the refusals it counts but does not name are
--     reported in the outcome (the reconciliation's engine columns then show the difference).
--   * The stored webhook event is marked processed with that outcome. Returns the hours parked.
create or replace function meter.sync_refused(p_event_id text, p_event jsonb)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_dead     integer := 0;
    v_counted  bigint;
    v_named    bigint;
begin
    with samples as (
        select t ->> 'code' as code, s ->> 'error_message' as message, s #>> '{request,identifier}' as identifier
        from pg_catalog.jsonb_array_elements(coalesce(p_event #> '{data,reason,error_types}', '[]')) t,
             pg_catalog.jsonb_array_elements(coalesce(t -> 'sample_errors', '[]')) s
    ),
    ours as (
        select m[1]::bigint as customer_id, m[2]::bigint as meter_id, pg_catalog.to_timestamp(m[3]::bigint) as hour,
               m[4]::bigint as revision, s.code, s.message
        from samples s, pg_catalog.regexp_match(s.identifier, '^meter-([0-9]{1,18})-([0-9]{1,18})-([0-9]{1,12})-r([0-9]{1,18})(\.f[0-9a-f]{12})?$') m
    ),
    parked as (
        update meter.sync_outbox o
        set state            = 'dead',
            last_error       = pg_catalog.left(pg_catalog.format('engine refused asynchronously (%s): %s: %s',
                                                                 p_event_id, ours.code, ours.message), 1000),
            synced_revision  = case when o.synced_revision = ours.revision then 0 else o.synced_revision end,
            synced_quantity  = case when o.synced_revision = ours.revision then null else o.synced_quantity end,
            synced_lines     = case when o.synced_revision = ours.revision then null else o.synced_lines end,
            unsynced_since   = coalesce(o.unsynced_since, pg_catalog.now()),
            next_attempt_at  = pg_catalog.now()
        from ours
        where o.customer_id = ours.customer_id and o.meter_id = ours.meter_id and o.hour = ours.hour
          and (o.synced_revision = ours.revision or o.sending_revision = ours.revision)
        returning 1
    )
    select pg_catalog.count(*) into v_dead from parked;

    select coalesce(pg_catalog.sum((t ->> 'error_count')::bigint), 0),
           coalesce(pg_catalog.sum(pg_catalog.jsonb_array_length(coalesce(t -> 'sample_errors', '[]'))), 0)
      into v_counted, v_named
    from pg_catalog.jsonb_array_elements(coalesce(p_event #> '{data,reason,error_types}', '[]')) t;

    update meter.webhook_events
    set processed_at = pg_catalog.now(),
        outcome = pg_catalog.format('applied: %s hour(s) parked dead; %s refusal(s) counted, %s named', v_dead, v_counted, v_named)
    where event_id = p_event_id;
    return v_dead;
end;
$$;

comment on function meter.sync_refused(text, jsonb) is
    'Parks dead the hours whose meter events the engine refused after the fact (v2 stream error reports).';

revoke all on function meter.sync_refused(text, jsonb) from public;
