-- meter._unfolded(): what is stored and not folded yet, for meter.reconciliation: events above the
-- rollup watermark (n = +1, v = value) and cancellations not subtracted yet (n = -1, v = -value),
-- each with its event's customer, meter, time and properties, and when it arrived (the event's
-- received_at, the cancellation's cancelled_at). Normally a few seconds' worth.
--
-- A function and not plain SQL in the view, as meter._rollup_pending: planned with the watermark's
-- actual values (plan_cache_mode = force_custom_plan) it is an index range scan on (xid, id); with
-- the values unknown the planner assumed a third of the table and scanned all of it (0.55 s for
-- the 6.4 M events of the 5 M-event replay's month, on every reconciliation).
create or replace function meter._unfolded()
returns table (customer_id bigint, meter_id bigint, occurred_at timestamptz, properties jsonb, n integer, v numeric,
               arrived_at timestamptz)
language plpgsql
stable
security definer  -- meter.reconciliation's readers (meter_analyst) need not read raw events
set search_path = pg_catalog, pg_temp
set plan_cache_mode = force_custom_plan
as $$
declare
    v_xid xid8;
    v_id  bigint;
begin
    -- one scan from the lowest shard's position; each event against its customer's shard's
    select w.position_xid, w.position_id into v_xid, v_id
    from meter.rollup_watermark w order by w.position_xid, w.position_id limit 1;
    return query
        select e.customer_id, e.meter_id, e.occurred_at, e.properties, 1, e.value, e.received_at
        from meter.events e
        join meter.rollup_watermark w on w.shard = e.customer_id % w.shard_count
        where (e.xid, e.id) >= (v_xid, v_id) and (e.xid, e.id) >= (w.position_xid, w.position_id)
        union all
        select e.customer_id, e.meter_id, e.occurred_at, e.properties, -1, -e.value, x.cancelled_at
        from meter.event_cancellations x join meter.events e on e.id = x.event_id
        where x.rolled_up_at is null;
end;
$$;

comment on function meter._unfolded() is
    'Events above the rollup watermark (+1) and cancellations not subtracted yet (-1): what the reconciliation adds to the ledger.';

revoke all on function meter._unfolded() from public;
grant execute on function meter._unfolded() to meter_analyst;
