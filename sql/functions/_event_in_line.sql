-- meter._event_in_line(plan_id, meter_id, filter, properties, occurred_at): whether an event of a
-- meter belongs to the invoice line a plan prices with `filter`: always when the plan has no
-- filter for the meter (the whole meter is one line); otherwise when meter._dims_priced_by gives
-- that filter for the event's dimension values (meter._dimension_values under the meter version in
-- force at the event's hour, as the rollup groups it).
--
-- The raw-event side of the line rule: meter._line_events (a line's hash) and the
-- reconciliation's raw figures, which reads meter.events with the view owner's rights and calls
-- this with the analyst's (it reads only plan prices and meter versions).
create or replace function meter._event_in_line(
    p_plan_id     bigint,
    p_meter_id    bigint,
    p_filter      jsonb,
    p_properties  jsonb,
    p_occurred_at timestamptz)
returns boolean
language plpgsql
stable
set search_path = pg_catalog, pg_temp
-- (PL/pgSQL, called once per event by the reconciliation and the close's hashes: its lookups keep
-- their plans for the session and the SQL functions it calls are plain expressions, whose plans
-- last the transaction; as a SQL function, every nested call was planned again for each event,
-- 50-80 us an event)
as $$
declare
    v_dimensions text[];
begin
    if not exists (select 1 from meter.plan_prices pp
                   where pp.plan_id = p_plan_id and pp.meter_id = p_meter_id and pp.filter <> '{}'::jsonb) then
        return true;
    end if;
    -- the dimensions of the meter version in force at the event's time
    select v.dimensions into v_dimensions
    from meter.meter_versions v
    where v.meter_id = p_meter_id and v.effective_from <= p_occurred_at
    order by v.effective_from desc
    limit 1;
    return meter._dims_priced_by(p_plan_id, p_meter_id,
               coalesce(meter._dimension_values(p_properties, v_dimensions), '{}'::jsonb)) = p_filter;
end;
$$;

comment on function meter._event_in_line(bigint, bigint, jsonb, jsonb, timestamptz) is
    'Whether an event (its properties and time) belongs to the invoice line a plan prices with a filter.';
revoke all on function meter._event_in_line(bigint, bigint, jsonb, jsonb, timestamptz) from public;
grant execute on function meter._event_in_line(bigint, bigint, jsonb, jsonb, timestamptz) to meter_analyst;
