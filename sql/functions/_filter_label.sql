-- meter._filter_label(filter, has_filters): how an invoice line names the part of a meter it
-- prices, after the meter's code: '' for a meter priced without filters, ' [model=gpt-4o]' or
-- ' [model=a|b, region=(none)]' for a filter (values in their stored order, "(none)" for JSON null;
-- a single value may also be given bare, as plan_price_set accepts it),
-- ' [other]' for the default price of a meter that also has filters.
create or replace function meter._filter_label(p_filter jsonb, p_has_filters boolean)
returns text
language sql
immutable
set search_path = pg_catalog, pg_temp
as $$
    select case
        when p_filter = '{}'::jsonb and not p_has_filters then ''
        when p_filter = '{}'::jsonb then ' [other]'
        else ' [' || (select pg_catalog.string_agg(f.key || '=' || (
                                 select pg_catalog.string_agg(coalesce(v #>> '{}', '(none)'), '|' order by o)
                                 from pg_catalog.jsonb_array_elements(case pg_catalog.jsonb_typeof(f.value) when 'array' then f.value
                                                                       else pg_catalog.jsonb_build_array(f.value) end)
                                      with ordinality as a(v, o)),
                             ', ' order by f.key)
                      from pg_catalog.jsonb_each(p_filter) f) || ']'
    end
$$;

comment on function meter._filter_label(jsonb, boolean) is
    'An invoice line''s name for a price filter: '''', '' [model=a|b]'' or '' [other]'' (the default beside filters).';
revoke all on function meter._filter_label(jsonb, boolean) from public;
-- meter.reconciliation calls it with the reader's rights.
grant execute on function meter._filter_label(jsonb, boolean) to meter_analyst;
