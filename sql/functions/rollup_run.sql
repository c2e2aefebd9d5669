-- meter.rollup_run(max_events, shard): fold the events and cancellations not yet rolled up into
-- meter.rollup_hourly, once. Safe to call from psql at any time: `select * from meter.rollup_run();`
--
-- Shards (decision 125): the customers are split into meter.rollup_watermark's shard_count shards
-- (customer_id % shard_count); each shard has its own watermark row and lock, and everything below
-- holds per shard: a run folds the events, cancellations and redeliveries of one shard's customers
-- only, so runs of different shards (one per core, e.g. meterctl serve's loops) fold at once and
-- never write the same rows. Without a shard, every shard in turn, in this one transaction.
--
-- Guarantees
--   * One run per shard at a time: transaction-scoped advisory locks, hashtext('meter.rollup')
--     shared by every run (what must exclude all runs takes it exclusively) and
--     (hashtext('meter.rollup'), shard) for the shard. A second caller does not wait: it returns
--     ran = false and changes nothing.
--   * Exactly once, by construction: the folded rows and the new watermark are written by the same
--     transaction. A crash, a pg_terminate_backend or an error anywhere in the run rolls back both;
--     the next run starts from the old watermark.
--   * Nothing skipped, whatever the commit order. Events are taken in (xid, id) order, where xid is
--     the inserting transaction's id, and only below the horizon: the xmin of this run's snapshot,
--     i.e. the oldest transaction still running. Every transaction below it has finished, so no
--     event can ever appear behind the watermark. An event whose transaction took its id early
--     and commits late simply has an xid at or above the horizon until it commits: it waits for
--     a later run. (The price: one long-running transaction anywhere in the cluster holds the
--     horizon back; meter.rollup_lag names it.)
--   * A cancellation is subtracted once (rolled_up_at is set in this transaction), and only once
--     its event has been added (by this run or an earlier one), so no hour ever goes below what
--     its folded events justify. The max of an hour that lost an event is recomputed from raw
--     events, since a maximum cannot be subtracted.
--   * Late events (any past hour) update their hour like any other; the row's revision grows.
--   * Meters with a latest version: each hour keeps its last event (latest_at, latest_key,
--     latest_value; the later occurred_at wins, then the greater idempotency key), read from raw
--     events for every hour the run touched (step 4a').
--   * Time-weighted gauges (time_weighted_sum): events fold their count only; the quantity of a
--     series' hours is recomputed from raw events (meter._gauge_hours) from the earliest hour an
--     event or cancellation of this run touched, and every run extends every series to the last
--     complete UTC hour (meter.gauge_series), in this same transaction; changed billed hours get
--     a new outbox revision (meter._outbox_requeue). With dimensions, one series per combination
--     of values (meter._gauge_dims_hours): each its dimension row, the hour the sum of them.
--   * Meters with dimensions: the same groups are also written per dimension values
--     (meter.rollup_hourly_dims, meter._dimension_values of the version in force at the hour) by
--     the same statements, so an hour's dimension rows always sum to its rollup_hourly row.
--   * Billing period totals: the same groups are added to meter.rollup_period(_dims) (the
--     customer's billing period of the hour) by the same statements, cancellations subtracted
--     with them, and a period whose hour had its max recomputed gets its max recomputed from its
--     hours; so a period row is always Σ of its hourly rows (meter.rollup_period_verify). Gauges
--     (time-weighted) are not kept there.
--   * The ledger (meter.rollup_ledger, decision 123): the same events are also counted per hour and
--     dimension values by their own statements (events, Σ value, a checksum of their keys, those
--     folded into a period already closed as late), cancellations likewise, and redeliveries
--     acknowledged as duplicates (meter.event_redeliveries, taken in (xid, id) order below the same
--     horizon, with their own position on the watermark's row). meter.reconciliation reads it
--     instead of raw events; meter.reconciliation_verify recomputes it from them. Each step's
--     rows go through meter._rollup_ledger_add, which adds them to their hours and, grouped, to
--     their billing period's (meter.rollup_ledger_period, decision 124): the one place both are
--     written, so a period row is always Σ of its hours (meter.rollup_ledger_period_verify).
--   * Billing outbox: every hour changed gets its new revision in meter.sync_outbox in the same
--     transaction (meter._outbox_requeue: back to pending unless a send is in flight), all in one
--     statement in key order (step 4d; decision 118), and meter_sync is NOTIFied at commit. A
--     rolled-back run leaves neither.
--
-- max_events bounds the events folded by one run (and so its duration and memory); more_pending
-- says when it stopped early. Hours are UTC hours of occurred_at (date_bin on absolute time: the
-- session's TimeZone plays no part, and it is several times cheaper than date_trunc per event).
--
-- Each shard's run is meter._rollup_fold; this function runs one shard or every shard, then gives
-- every hour they changed its new outbox revision in one statement (step 4d) and wakes the sync.
create or replace function meter.rollup_run(p_max_events integer default 1000000, p_shard integer default null)
returns meter.rollup_result
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_started   timestamptz := pg_catalog.clock_timestamp();
    v_fold      record;
    v_all       meter.rollup_result;
    v_shard     integer;
    v_customers bigint[] := '{}';
    v_meters    bigint[] := '{}';
    v_hours     timestamptz[] := '{}';
    v_revisions bigint[] := '{}';
    v_outbox    bigint;
begin
    if p_max_events is null or p_max_events < 1 then
        raise exception 'max_events must be a positive integer, got %', coalesce(p_max_events::text, 'null')
            using errcode = '22023';
    end if;
    if p_shard is not null and (p_shard < 0 or p_shard > 63) then
        raise exception 'shard must be between 0 and 63, got %', p_shard using errcode = '22023';
    end if;

    if p_shard is not null then
        select * into strict v_fold from meter._rollup_fold(p_max_events, p_shard);
        v_all := v_fold.result;
        v_customers := v_fold.outbox_customers; v_meters := v_fold.outbox_meters;
        v_hours := v_fold.outbox_hours; v_revisions := v_fold.outbox_revisions;
    else
        -- Every shard in turn (what a psql call or a single process wants). The shard list is read
        -- under the rollup's shared lock, so meter.rollup_shards_set cannot change it meanwhile.
        -- The result adds the runs up (duration_ms too); its position is the lowest shard's; ran is
        -- true when every shard ran (one busy with another caller's run: false, call again).
        if not pg_catalog.pg_try_advisory_xact_lock_shared(pg_catalog.hashtext('meter.rollup')) then
            return row(false, 0, 0, 0, null, null, null, false,
                       round(extract(epoch from pg_catalog.clock_timestamp() - v_started) * 1000, 3))::meter.rollup_result;
        end if;
        for v_shard in select w.shard from meter.rollup_watermark w order by w.shard loop
            select * into strict v_fold from meter._rollup_fold(p_max_events, v_shard);
            v_customers := v_customers || coalesce(v_fold.outbox_customers, '{}');
            v_meters    := v_meters || coalesce(v_fold.outbox_meters, '{}');
            v_hours     := v_hours || coalesce(v_fold.outbox_hours, '{}');
            v_revisions := v_revisions || coalesce(v_fold.outbox_revisions, '{}');
            if v_all is null then
                v_all := v_fold.result;
            else
                v_all.ran                  := v_all.ran and (v_fold.result).ran;
                v_all.events_folded        := v_all.events_folded + (v_fold.result).events_folded;
                v_all.cancellations_folded := v_all.cancellations_folded + (v_fold.result).cancellations_folded;
                v_all.hours_touched        := v_all.hours_touched + (v_fold.result).hours_touched;
                v_all.more_pending         := v_all.more_pending or (v_fold.result).more_pending;
                if (v_fold.result).ran
                   and (v_all.position_xid is null
                        or ((v_fold.result).position_xid, (v_fold.result).position_id) < (v_all.position_xid, v_all.position_id)) then
                    v_all.position_xid := (v_fold.result).position_xid;
                    v_all.position_id  := (v_fold.result).position_id;
                end if;
                v_all.horizon_xid := coalesce(v_all.horizon_xid, (v_fold.result).horizon_xid);
                v_all.duration_ms := v_all.duration_ms + (v_fold.result).duration_ms;
            end if;
        end loop;
    end if;

    -- 4d. Every billed hour the runs changed gets its new outbox revision, in one statement that
    -- locks the outbox rows in key order, as the sync's acknowledgements do: the two cannot wait on
    -- each other in a cycle (they did, 40P01, when a run wrote the outbox in four statements; one
    -- statement per shard would again). Back to pending unless a send is in flight or parked
    -- uncertain.
    if pg_catalog.cardinality(v_customers) > 0 then
        v_outbox := meter._outbox_requeue(v_customers, v_meters, v_hours, v_revisions);
        -- 6. Wake the billing sync when billed hours changed (delivered at commit, dropped on
        -- rollback, like the rows).
        if v_outbox > 0 then
            perform pg_catalog.pg_notify('meter_sync', '');
        end if;
    end if;
    return v_all;
end;
$$;

comment on function meter.rollup_run(integer, integer) is
    'Folds events and cancellations past the watermark into rollup_hourly, exactly once: one shard, or every shard in turn; one run per shard at a time.';

revoke all on function meter.rollup_run(integer, integer) from public;
