-- meter.rollup_rebase(): after a restore or a move to another cluster, put the rollup watermark
-- and the events' transaction ids back on this cluster's scale. Returns the events re-based.
--
-- Why: the watermark orders events by the id of the transaction that inserted them. Transaction
-- ids belong to a cluster; a restored database carries the old cluster's ids, usually far ahead of
-- the new cluster's, and meter.rollup_run() stops with SQLSTATE 55000 ("watermark is ahead of this
-- cluster's oldest running transaction") rather than skip the events written from now on.
--
-- What it does, in one transaction:
--   * takes the rollup lock (waits for a running rollup) and blocks new events meanwhile
--     (LOCK meter.events IN SHARE ROW EXCLUSIVE MODE: readers go on, writers wait);
--   * keeps the meaning of the old watermark exactly: every event it had folded gets xid 3, every
--     event it had not gets xid 4, and the watermark becomes (4, 0). So folded events stay folded
--     (never counted twice) and pending ones get folded by the next run (never skipped); the
--     cluster's own transaction ids are all above 4, so new events come after both.
--   * refuses when the watermark is not ahead of the horizon (nothing to repair): 55000.
-- It rewrites every event row once (plan a maintenance window for a large table, then VACUUM).
-- Redeliveries (meter.event_redeliveries, counted in meter.rollup_ledger in the same order) are
-- mapped the same way against their own position. With rollup shards (decision 125), each row
-- against the positions of its customer's shard; every shard ends at (4, 0). Rollup rows, the ledger, cancellations and their
-- rolled_up_at are untouched: they do not hold xids.
create or replace function meter.rollup_rebase()
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_ahead   text;
    v_horizon xid8;
    v_rows    bigint;
begin
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));
    lock table meter.events in share row exclusive mode;
    lock table meter.event_redeliveries in share row exclusive mode;
    v_horizon := pg_catalog.pg_snapshot_xmin(pg_catalog.pg_current_snapshot());
    perform 1 from meter.rollup_watermark for update;
    -- (any shard, either position: a run cut short by max_events leaves the events' behind the
    -- redeliveries')
    select pg_catalog.string_agg(pg_catalog.format('shard %s: %s/%s, redeliveries %s/%s', w.shard, w.position_xid, w.position_id,
                                                   w.redeliveries_xid, w.redeliveries_id), '; ' order by w.shard)
      into v_ahead
    from meter.rollup_watermark w;
    if not exists (select 1 from meter.rollup_watermark w
                   where (w.position_xid, w.position_id) > (v_horizon, 0::bigint)
                      or (w.redeliveries_xid, w.redeliveries_id) > (v_horizon, 0::bigint)) then
        raise exception 'the rollup watermark (%) is not ahead of this cluster''s horizon (%): nothing to re-base',
            v_ahead, v_horizon
            using errcode = '55000';
    end if;

    -- (each row against the position of its customer's rollup shard)
    update meter.events e
    set xid = case when (e.xid, e.id) < (w.position_xid, w.position_id) then '3'::xid8
                   else '4'::xid8 end
    from meter.rollup_watermark w
    where w.shard = e.customer_id % w.shard_count;
    get diagnostics v_rows = row_count;

    update meter.event_redeliveries r
    set xid = case when (r.xid, r.id) < (w.redeliveries_xid, w.redeliveries_id) then '3'::xid8
                   else '4'::xid8 end
    from meter.rollup_watermark w
    where w.shard = r.customer_id % w.shard_count;

    update meter.rollup_watermark
    set position_xid = '4', position_id = 0,
        redeliveries_xid = '4', redeliveries_id = 0, updated_at = pg_catalog.now();
    return v_rows;
end;
$$;

comment on function meter.rollup_rebase() is
    'After a restore from another cluster: maps folded events to xid 3, pending ones to xid 4, watermark to (4, 0).';

revoke all on function meter.rollup_rebase() from public;
