-- meter._line_events(customer_id, meter_id, from, to, plan_id, filter): the raw events of one
-- invoice line: the customer's events of the meter that occurred in [from, to) and that the plan
-- prices with `filter` (meter._event_in_line). When the plan has no filter for the meter, every
-- event of the meter in the range (the whole meter is one line). Cancelled events included.
--
-- The raw side of a line, for its events hash (meter._line_hash); the rollup side is
-- meter._line_usage. Both assign usage to lines by the same rule (meter._dims_priced_by).
create or replace function meter._line_events(
    p_customer_id bigint,
    p_meter_id    bigint,
    p_from        timestamptz,
    p_to          timestamptz,
    p_plan_id     bigint,
    p_filter      jsonb)
returns setof meter.events
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select e.*
    from meter.events e
    where e.customer_id = p_customer_id and e.meter_id = p_meter_id
      and e.occurred_at >= p_from and e.occurred_at < p_to
      and meter._event_in_line(p_plan_id, p_meter_id, p_filter, e.properties, e.occurred_at)
$$;

comment on function meter._line_events(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) is
    'The raw events (cancelled included) of an invoice line: a meter''s events in a range that a plan prices with a filter.';
revoke all on function meter._line_events(bigint, bigint, timestamptz, timestamptz, bigint, jsonb) from public;
