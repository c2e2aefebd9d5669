-- meter._filter_normalize(meter_id, filter): a filter of a meter's dimensions as it is stored, or a
-- refusal naming what is wrong (22023). A filter is an object of dimension -> a string, null (the
-- "none" value: events without the property) or a non-empty array of them; null is '{}'. Stored
-- with each value as a sorted array of distinct values ({"model": "a"} is {"model": ["a"]}), so one
-- filter has one text; its dimensions must be the meter's (in some version). Used by
-- meter.plan_price_set and meter.plan_limit_set, so prices and limits read filters alike.
create or replace function meter._filter_normalize(p_meter_id bigint, p_filter jsonb)
returns jsonb
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_filter jsonb;
begin
    if p_filter is null then return '{}'; end if;
    if pg_catalog.jsonb_typeof(p_filter) <> 'object' or exists (
            select 1 from pg_catalog.jsonb_each(p_filter) f
            where pg_catalog.jsonb_typeof(f.value) not in ('string', 'null', 'array')
               or (pg_catalog.jsonb_typeof(f.value) = 'array' and (pg_catalog.jsonb_array_length(f.value) = 0 or exists (
                       select 1 from pg_catalog.jsonb_array_elements(f.value) a
                       where pg_catalog.jsonb_typeof(a) not in ('string', 'null'))))) then
        raise exception 'filter must be an object of dimension: value (a string, null, or a non-empty array of them), got %', p_filter
            using errcode = '22023';
    end if;
    select coalesce(pg_catalog.jsonb_object_agg(f.key, (
               select pg_catalog.jsonb_agg(distinct a.v order by a.v)
               from pg_catalog.jsonb_array_elements(case pg_catalog.jsonb_typeof(f.value) when 'array' then f.value
                                                         else pg_catalog.jsonb_build_array(f.value) end) a(v))), '{}')
      into v_filter
    from pg_catalog.jsonb_each(p_filter) f;
    if exists (select 1 from pg_catalog.jsonb_object_keys(v_filter) k(name)
               where k.name not in (select d from meter.meter_versions v, pg_catalog.unnest(v.dimensions) d
                                    where v.meter_id = p_meter_id)) then
        raise exception 'meter % has no such dimension (filter %)',
            (select m.code from meter.meters m where m.id = p_meter_id), v_filter using errcode = '22023';
    end if;
    return v_filter;
end;
$$;

comment on function meter._filter_normalize(bigint, jsonb) is
    'A filter of a meter''s dimensions validated (22023) and normalised to sorted arrays of distinct values.';
revoke all on function meter._filter_normalize(bigint, jsonb) from public;
