-- meter.rollup_shards_set(shard_count): split the rollup into shard_count shards (1 to 64), each
-- with its own watermark row and lock, so that as many runs fold at once (decision 125). Returns
-- the events and cancellations it folded on the way.
--
-- A customer's events, cancellations and redeliveries belong to shard customer_id % shard_count.
-- Changing the count moves customers between shards, so every shard must first stand at one
-- common position, or an event would be folded twice (its new shard behind its old one) or never
-- (ahead). This function:
--   * takes the rollup's lock exclusively (waits for the runs under way; new runs of any shard
--     return ran = false meanwhile) and blocks new events and redeliveries (LOCK ... IN SHARE ROW
--     EXCLUSIVE MODE, as meter.rollup_rebase: readers go on, ingest waits);
--   * folds every shard to the horizon in this transaction (meter.rollup_run per shard until
--     nothing is left below it), again while the horizon moved between two shards (at most five
--     passes; then 55000, nothing changed);
--   * rewrites the watermark rows: shard_count rows at that common position, the totals kept on
--     shard 0's row (named events).
-- Run it when the rollup has caught up (the fold happens inside this transaction, with ingest
-- waiting); `meterctl rollup shards --set N` calls it. Idempotent: the same count again only folds.
create or replace function meter.rollup_shards_set(p_shard_count integer)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_r       meter.rollup_result;
    v_pass    integer;
    v_shard   integer;
    v_folded  bigint := 0;
    v_equal   boolean := false;
    v_wm      meter.rollup_watermark;
begin
    if p_shard_count is null or p_shard_count < 1 or p_shard_count > 64 then
        raise exception 'shard_count must be between 1 and 64, got %', coalesce(p_shard_count::text, 'null')
            using errcode = '22023';
    end if;
    if pg_catalog.current_setting('transaction_isolation') <> 'read committed' then
        raise exception 'meter.rollup_shards_set() must run in a READ COMMITTED transaction (it calls meter.rollup_run)'
            using errcode = '0A000';
    end if;

    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));
    lock table meter.events in share row exclusive mode;
    lock table meter.event_redeliveries in share row exclusive mode;

    -- Every shard to the horizon (this session holds the rollup's lock: its own runs take it too).
    for v_pass in 1 .. 5 loop
        for v_shard in select w.shard from meter.rollup_watermark w order by w.shard loop
            loop
                select * into strict v_r from meter.rollup_run(1000000, v_shard);
                if not v_r.ran then
                    raise exception 'rollup shard % could not run', v_shard using errcode = '55000';
                end if;
                v_folded := v_folded + v_r.events_folded + v_r.cancellations_folded;
                exit when not v_r.more_pending;
            end loop;
        end loop;
        select pg_catalog.count(distinct (w.position_xid, w.position_id)) = 1
               and pg_catalog.count(distinct (w.redeliveries_xid, w.redeliveries_id)) = 1
          into v_equal
        from meter.rollup_watermark w;
        exit when v_equal;
    end loop;
    if not v_equal then
        raise exception 'the rollup shards did not reach one common position (the horizon kept moving): nothing changed, try again'
            using errcode = '55000';
    end if;

    -- The rows: shard 0 keeps its name and takes every shard's totals; the others start at 0.
    select * into strict v_wm from meter.rollup_watermark w where w.shard = 0 for update;
    select v_wm.runs_total + coalesce(pg_catalog.sum(w.runs_total), 0),
           v_wm.events_total + coalesce(pg_catalog.sum(w.events_total), 0),
           v_wm.cancellations_total + coalesce(pg_catalog.sum(w.cancellations_total), 0),
           v_wm.redeliveries_total + coalesce(pg_catalog.sum(w.redeliveries_total), 0)
      into v_wm.runs_total, v_wm.events_total, v_wm.cancellations_total, v_wm.redeliveries_total
    from meter.rollup_watermark w where w.shard <> 0;
    delete from meter.rollup_watermark w where w.shard <> 0;
    update meter.rollup_watermark w
    set shard_count = p_shard_count, runs_total = v_wm.runs_total, events_total = v_wm.events_total,
        cancellations_total = v_wm.cancellations_total, redeliveries_total = v_wm.redeliveries_total,
        updated_at = pg_catalog.now()
    where w.shard = 0;
    insert into meter.rollup_watermark (name, shard, shard_count, position_xid, position_id, redeliveries_xid, redeliveries_id)
    select 'events/' || s, s, p_shard_count, v_wm.position_xid, v_wm.position_id, v_wm.redeliveries_xid, v_wm.redeliveries_id
    from pg_catalog.generate_series(1, p_shard_count - 1) as s;
    return v_folded;
end;
$$;

comment on function meter.rollup_shards_set(integer) is
    'Splits the rollup into N shards (customer_id % N), each with its own watermark and lock, after folding every shard to one common position.';

revoke all on function meter.rollup_shards_set(integer) from public;
