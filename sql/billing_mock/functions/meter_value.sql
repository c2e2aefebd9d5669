-- billing_mock.meter_value(meter, customer, from, to): a Billing Meter's aggregated value for one
-- customer over [from, to) (unix seconds, event timestamps), as invoices and event summaries use it.
--
-- The formula over the events the meter keeps (billing_mock.meter_kept_events: one per window,
-- the newest, for a pre-aggregated meter): sum of the values, count of the events, or last (the
-- value of the event with the latest timestamp, latest received on a tie). No event: 0.
create or replace function billing_mock.meter_value(p_meter text, p_customer text, p_from bigint, p_to bigint)
returns numeric
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    with kept as (select * from billing_mock.meter_kept_events(p_meter, p_customer, p_from, p_to))
    select coalesce(case (select data #>> '{default_aggregation,formula}' from billing_mock.objects
                          where id = p_meter and object = 'billing.meter')
        when 'sum' then (select sum(value) from kept)
        when 'count' then (select count(*) from kept)::numeric
        when 'last' then (select value from kept order by ts desc, seq desc limit 1)
    end, 0);
$$;

comment on function billing_mock.meter_value(text, text, bigint, bigint) is
    'A Billing Meter''s value for one customer over [from, to): the formula (sum, count, last) over the events it keeps.';
