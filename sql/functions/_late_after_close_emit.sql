-- meter._late_after_close_emit(customers, meters, hours, run_key): tells the operators' endpoints
-- that a rollup run changed hours of periods already closed (usage.late_after_close): one message
-- per customer and closed period the run touched, naming the meters and hours; the events
-- themselves are in meter.late_after_close, and the next invoice carries the adjustment.
-- `run_key` (the run's end position) makes each run's messages its own. Does nothing (one query)
-- unless an enabled endpoint takes the type: a message nobody takes would have no delivery.
-- Called by meter.rollup_run in its transaction. Returns how many messages.
create or replace function meter._late_after_close_emit(p_customers bigint[], p_meters bigint[], p_hours timestamptz[], p_run_key text)
returns integer
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
    v_n integer := 0;
    v_r record;
begin
    if not exists (select 1 from meter.webhook_endpoints e where e.enabled and 'usage.late_after_close' = any (e.event_types)) then
        return 0;
    end if;
    for v_r in
        select c.id, c.external_id, i.period,
               pg_catalog.array_agg(distinct m.code order by m.code) as meters, pg_catalog.count(distinct k.h) as hours
        from rows from (pg_catalog.unnest(p_customers), pg_catalog.unnest(p_meters), pg_catalog.unnest(p_hours)) as k(c, m, h)
        join meter.invoices i on i.customer_id = k.c and k.h >= i.period_start and k.h < i.period_end
        join meter.customers c on c.id = k.c
        join meter.meters m on m.id = k.m
        group by c.id, c.external_id, i.period
        order by c.id, i.period
    loop
        perform meter._webhook_emit('usage.late_after_close', pg_catalog.format('late:%s:%s:%s', v_r.id, v_r.period, p_run_key),
            pg_catalog.jsonb_build_object('customer', v_r.external_id, 'period', v_r.period, 'meters', pg_catalog.to_jsonb(v_r.meters),
                                          'hours_changed', v_r.hours));
        v_n := v_n + 1;
    end loop;
    return v_n;
end;
$$;

comment on function meter._late_after_close_emit(bigint[], bigint[], timestamptz[], text) is
    'Emits usage.late_after_close for the closed periods a rollup run changed (when an endpoint takes it).';
revoke all on function meter._late_after_close_emit(bigint[], bigint[], timestamptz[], text) from public;
