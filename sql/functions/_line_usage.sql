-- meter._line_usage(customer_id, meter_id, from, to, plan_id, filter): the billable quantity and
-- event count of one invoice line: the part of a meter's usage in [from, to) that the plan prices
-- with `filter` (the whole meter when the plan prices it without filters). meter._line_figures for
-- one request: the rules and refusals are written there, once.
create or replace function meter._line_usage(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_from        timestamptz,
    p_to          timestamptz,
    p_plan_id     bigint,
    p_filter      jsonb)
returns table (event_count bigint, quantity numeric, aggregation text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select f.event_count, f.quantity, f.aggregation
    from meter._line_figures(array[p_customer_id], array[p_meter_id], array[p_from], array[p_to],
                             array[p_plan_id], array[p_filter]) f
$$;

comment on function meter._line_usage(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) is
    'Billable quantity and event count of an invoice line: the part of a meter''s usage a plan prices with a filter.';
revoke all on function meter._line_usage(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) from public;
-- meter.reconciliation calls it with the analyst's rights (as _period_usage).
grant execute on function meter._line_usage(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) to meter_analyst;
