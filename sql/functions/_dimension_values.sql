-- meter._dimension_values(properties, dimensions): the dimension values of one event, as the
-- rollup groups it: the jsonb object {name: properties ->> name} over the meter version's
-- dimensions (at most 3), with JSON null where the event lacks the property (the "none" value:
-- such events are grouped, never dropped). Null when the version has no dimensions.
--
-- Values are the property's text, so 4 and "4" are one value; an object or array property is
-- its JSON text. The same function folds (meter.rollup_run), subtracts cancellations and
-- verifies (meter.rollup_verify), so the three can never disagree on an event's group.
create or replace function meter._dimension_values(p_properties jsonb, p_dimensions text[])
returns jsonb
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select case pg_catalog.cardinality(p_dimensions)
        when 0 then null
        when 1 then pg_catalog.jsonb_build_object(p_dimensions[1], p_properties ->> p_dimensions[1])
        when 2 then pg_catalog.jsonb_build_object(p_dimensions[1], p_properties ->> p_dimensions[1],
                                                  p_dimensions[2], p_properties ->> p_dimensions[2])
        else pg_catalog.jsonb_build_object(p_dimensions[1], p_properties ->> p_dimensions[1],
                                           p_dimensions[2], p_properties ->> p_dimensions[2],
                                           p_dimensions[3], p_properties ->> p_dimensions[3])
    end
$$;

comment on function meter._dimension_values(jsonb, text[]) is
    'An event''s dimension values {name: text or null} under a meter version''s dimensions; null without dimensions.';

revoke all on function meter._dimension_values(jsonb, text[]) from public;
