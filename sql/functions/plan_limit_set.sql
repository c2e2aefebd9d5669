-- meter.plan_limit_set(plan, meter, quantity, filter): cap a meter's usage per billing period in a
-- plan, for the whole meter ('{}', the default) or the usage under a filter of its dimensions
-- (meter._filter_normalize: {"model": "gpt-4o"}). quantity null removes the limit. Returns the
-- stored filter.
--
-- Limits count usage as the meter aggregates it: count (events), sum (values), max (the period's
-- largest value); distinct counts and gauges have no per-event increment a check could add
-- (0A000). Limits of one meter may overlap (the whole meter and one model): each is checked. A
-- limit is not frozen by invoices: it governs the open period, and changing it changes no figure
-- already billed.
create or replace function meter.plan_limit_set(
    p_plan     text,
    p_meter    text,
    p_quantity numeric,
    p_filter   jsonb default '{}')
returns jsonb
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_plan_id  bigint;
    v_meter_id bigint;
    v_filter   jsonb;
begin
    select id into v_plan_id from meter.plans where code = p_plan;
    if not found then raise exception 'unknown plan %', coalesce(p_plan, 'null') using errcode = '22023'; end if;
    select id into v_meter_id from meter.meters where code = p_meter;
    if not found then raise exception 'unknown meter %', coalesce(p_meter, 'null') using errcode = '22023'; end if;
    if p_quantity is not null and not (p_quantity > 0 and p_quantity < 'Infinity') then
        raise exception 'a limit must be a positive finite quantity, got %', p_quantity using errcode = '22023';
    end if;
    if exists (select 1 from meter.meter_versions v
               where v.meter_id = v_meter_id and v.aggregation not in ('count', 'sum', 'max')) then
        raise exception 'meter % counts distinct values or is a gauge: only count, sum and max meters take limits', p_meter
            using errcode = '0A000';
    end if;
    v_filter := meter._filter_normalize(v_meter_id, p_filter);
    if p_quantity is null then
        delete from meter.plan_limits l where l.plan_id = v_plan_id and l.meter_id = v_meter_id and l.filter = v_filter;
    else
        insert into meter.plan_limits as l (plan_id, meter_id, filter, quantity)
        values (v_plan_id, v_meter_id, v_filter, p_quantity)
        on conflict (plan_id, meter_id, filter) do update set quantity = excluded.quantity;
    end if;
    return v_filter;
end;
$$;

comment on function meter.plan_limit_set(text, text, numeric, jsonb) is
    'Caps a meter''s usage per period in a plan (whole meter or per filter of its dimensions); null removes the limit.';
revoke all on function meter.plan_limit_set(text, text, numeric, jsonb) from public;
