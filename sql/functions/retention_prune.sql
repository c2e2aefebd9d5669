-- meter.retention_prune(conflict_payload_keep, webhook_keep, max_rows): one pass of retention.
--
-- Contract
--   * event_redeliveries: a conflict's offered payload received more than conflict_payload_keep
--     ago is cleared; its SHA-256 (of offered::text) and the time of pruning are kept, and the
--     row itself stays (the reconciliation counts redeliveries).
--   * webhook_events: an event processed more than webhook_keep ago is deleted. An unprocessed
--     event is never deleted, whatever its age.
--   * At most max_rows rows of each table per call, oldest first; the caller repeats while a
--     count equals max_rows. Returns one row per table: (target, pruned).
--
-- Guarantees
--   * webhook_keep is at least 7 days (22023 otherwise): the event id is the dedup key of
--     received webhooks, and Stripe redelivers for up to 3 days. A redelivery after its row was
--     pruned is stored and applied again, which is harmless (invoice status only moves forward,
--     lines are replaced by the same lines) but would show as a second processing.
--   * conflict_payload_keep is at least 1 day (22023 otherwise).
--   * Times are the database clock's; SKIP LOCKED keeps two concurrent passes off each other.
create or replace function meter.retention_prune(
    p_conflict_payload_keep interval,
    p_webhook_keep          interval,
    p_max_rows              integer default 10000)
returns table (target text, pruned bigint)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_n bigint;
begin
    if p_conflict_payload_keep is null or p_conflict_payload_keep < interval '1 day' then
        raise exception 'conflict_payload_keep must be at least 1 day; got %', p_conflict_payload_keep
            using errcode = '22023';
    end if;
    if p_webhook_keep is null or p_webhook_keep < interval '7 days' then
        raise exception 'webhook_keep must be at least 7 days (the engine redelivers for up to 3); got %', p_webhook_keep
            using errcode = '22023';
    end if;
    if p_max_rows is null or p_max_rows < 1 then
        raise exception 'max_rows must be positive; got %', p_max_rows using errcode = '22023';
    end if;

    with due as (
        select r.id from meter.event_redeliveries r
        where r.offered is not null
          and r.received_at < pg_catalog.now() - p_conflict_payload_keep
        order by r.received_at
        limit p_max_rows
        for update skip locked
    )
    update meter.event_redeliveries r
    set offered_sha256 = pg_catalog.sha256(pg_catalog.convert_to(r.offered::text, 'UTF8')),
        offered_pruned_at = pg_catalog.now(),
        offered = null
    from due where r.id = due.id;
    get diagnostics v_n = row_count;
    target := 'event_redeliveries.offered'; pruned := v_n;
    return next;

    with due as (
        select w.event_id from meter.webhook_events w
        where w.processed_at is not null
          and w.processed_at < pg_catalog.now() - p_webhook_keep
        order by w.processed_at
        limit p_max_rows
        for update skip locked
    )
    delete from meter.webhook_events w using due where w.event_id = due.event_id;
    get diagnostics v_n = row_count;
    target := 'webhook_events'; pruned := v_n;
    return next;
end;
$$;

comment on function meter.retention_prune(interval, interval, integer) is
    'One retention pass: clears old conflict payloads (SHA-256 kept) and deletes old processed webhooks.';

revoke all on function meter.retention_prune(interval, interval, integer) from public;
