-- meter._dims_match(dims, filter): whether a dimension-values object (meter._dimension_values:
-- {name: text or null}) falls under a filter ({name: value, null or [values]}).
--
-- Every name of the filter must hold one of its values; names the filter does not mention are
-- free, so '{}' matches everything. A name missing from dims (a meter version without that
-- dimension) holds JSON null, the "none" value, as in the rollup. The one matching rule of
-- meter.usage's filter and of plan prices' filters (meter._dims_priced_by).
create or replace function meter._dims_match(p_dims jsonb, p_filter jsonb)
returns boolean
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select not exists (select 1 from pg_catalog.jsonb_each(p_filter) f
                       where not (f.value @> coalesce(p_dims -> f.key, 'null'::jsonb)))
$$;

comment on function meter._dims_match(jsonb, jsonb) is
    'Whether dimension values {name: value} fall under a filter {name: value or [values]} (''{}'' matches all).';
revoke all on function meter._dims_match(jsonb, jsonb) from public;
-- meter.reconciliation and meter.usage call it with the reader's rights (analysts read both).
grant execute on function meter._dims_match(jsonb, jsonb) to meter_analyst;
