-- meter.upsert_meter(code, aggregation, unique_property, name, unit): creates a meter, or returns
-- the existing one when its definition is identical. A different definition for an existing
-- code is refused (SQLSTATE 23505): changing how a meter aggregates must never silently rewrite
-- history (meter versioning is its own migration).
create or replace function meter.upsert_meter(
    p_code            text,
    p_aggregation     text default 'count',
    p_unique_property text default null,
    p_name            text default null,
    p_unit            text default null
)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_existing meter.meters;
begin
    select * into v_existing from meter.meters where code = p_code;
    if found then
        if v_existing.aggregation is distinct from p_aggregation
           or v_existing.unique_property is distinct from p_unique_property then
            raise exception 'meter % exists with aggregation % (unique_property %)',
                pg_catalog.quote_literal(p_code), v_existing.aggregation,
                coalesce(v_existing.unique_property, 'none')
                using errcode = '23505',
                      hint = 'a meter''s aggregation cannot be changed in place; create a new meter code';
        end if;
        update meter.meters
        set name = coalesce(p_name, name), unit = coalesce(p_unit, unit)
        where id = v_existing.id;
        return v_existing.id;
    end if;
    insert into meter.meters (code, aggregation, unique_property, name, unit)
    values (p_code, p_aggregation, p_unique_property, p_name, p_unit)
    returning id into v_existing.id;
    return v_existing.id;
end;
$$;

comment on function meter.upsert_meter(text, text, text, text, text) is
    'Creates a meter or confirms an identical one; refuses to change an aggregation in place.';

revoke all on function meter.upsert_meter(text, text, text, text, text) from public;
