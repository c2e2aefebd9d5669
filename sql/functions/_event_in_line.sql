-- meter._event_in_line(plan_id, meter_id, filter, properties, occurred_at): whether an event of a
-- meter belongs to the invoice line a plan prices with `filter`: always when the plan has no
-- filter for the meter (the whole meter is one line); otherwise when meter._dims_priced_by gives
-- that filter for the event's dimension values (meter._dimension_values under the meter version in
-- force at the event's hour, as the rollup groups it).
--
-- The raw-event side of the line rule: meter._line_events (the close's hashes) and the
-- reconciliation's raw figures, which reads meter.events with the view owner's rights and calls
-- this with the analyst's (it reads only plan prices and meter versions).
create or replace function meter._event_in_line(
    p_plan_id     bigint,
    p_meter_id    bigint,
    p_filter      jsonb,
    p_properties  jsonb,
    p_occurred_at timestamptz)
returns boolean
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select not exists (select 1 from meter.plan_prices pp
                       where pp.plan_id = p_plan_id and pp.meter_id = p_meter_id and pp.filter <> '{}'::jsonb)
        or meter._dims_priced_by(p_plan_id, p_meter_id,
               coalesce(meter._dimension_values(p_properties,
                   (select v.dimensions from meter.meter_version_ranges v
                    where v.meter_id = p_meter_id and p_occurred_at >= v.effective_from
                      and p_occurred_at < v.effective_until)), '{}'::jsonb)) = p_filter
$$;

comment on function meter._event_in_line(bigint, bigint, jsonb, jsonb, timestamptz) is
    'Whether an event (its properties and time) belongs to the invoice line a plan prices with a filter.';
revoke all on function meter._event_in_line(bigint, bigint, jsonb, jsonb, timestamptz) from public;
grant execute on function meter._event_in_line(bigint, bigint, jsonb, jsonb, timestamptz) to meter_analyst;
