-- meter._dimension_object(dimensions, values): the dimension values object {name: value} of
-- meter._dimension_values, from the names and their values in the same order (values may be
-- longer, padded with nulls: the rollup's fold reads 3 and groups by them as a text[], which
-- hashes far faster than a jsonb built per event, then names each group once here).
create or replace function meter._dimension_object(p_dimensions text[], p_values text[])
returns jsonb
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.jsonb_object_agg(d.name, p_values[d.i])
    from pg_catalog.unnest(p_dimensions) with ordinality as d(name, i)
$$;

comment on function meter._dimension_object(text[], text[]) is
    'The dimension values object {name: value or null} from a version''s dimension names and the values in their order.';

revoke all on function meter._dimension_object(text[], text[]) from public;
