-- meter._dims_priced_by(plan_id, meter_id, dims): the filter of the plan price that prices a
-- dimension-values combination of a meter: the plan's filter for the meter that matches it
-- (meter._dims_match; filters of one plan and meter never overlap, meter.plan_price_set), else
-- the meter's default price '{}', else null (the plan does not bill that usage).
--
-- The one assignment of usage to invoice lines: the close's quantities (meter._line_usage, from
-- rollup_hourly_dims) and its events hashes and the reconciliation's raw figures
-- (meter._line_events, from raw events) all go through it.
create or replace function meter._dims_priced_by(p_plan_id bigint, p_meter_id bigint, p_dims jsonb)
returns jsonb
language plpgsql
stable
set search_path = pg_catalog, pg_temp
-- (PL/pgSQL: called per event or per hourly row, its lookup keeps its plan for the session and the
-- match is a plain expression; as a SQL function the nested meter._dims_match was planned again
-- on every call)
as $$
declare
    v_filter jsonb;
    v_default jsonb;
begin
    for v_filter in
        select pp.filter from meter.plan_prices pp
        where pp.plan_id = p_plan_id and pp.meter_id = p_meter_id
        order by pp.filter = '{}'::jsonb, pp.filter
    loop
        if v_filter = '{}'::jsonb then
            v_default := v_filter;  -- (sorted last: no filter matched)
        elsif meter._dims_match(p_dims, v_filter) then
            return v_filter;
        end if;
    end loop;
    return v_default;
end;
$$;

comment on function meter._dims_priced_by(bigint, bigint, jsonb) is
    'The filter of the plan price that prices these dimension values of a meter (''{}'': the default; null: unpriced).';
revoke all on function meter._dims_priced_by(bigint, bigint, jsonb) from public;
grant execute on function meter._dims_priced_by(bigint, bigint, jsonb) to meter_analyst;
