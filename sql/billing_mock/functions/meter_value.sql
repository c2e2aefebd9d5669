-- billing_mock.meter_value(meter, customer, from, to): a Billing Meter's aggregated value for one
-- customer over [from, to) (unix seconds, event timestamps), as invoices and event summaries use it.
--
-- Only events not cancelled count. A pre-aggregated meter (event_time_window hour or day, UTC
-- windows) keeps one event per window: the most recent one, by timestamp and then by receipt,
-- so a newer event for the same window overwrites the older (Stripe: "only the most recent
-- meter event in each window is used"). Then the formula: sum of the values, count of the
-- events, or last (the value of the event with the latest timestamp, latest received on a tie).
-- No event: 0.
create or replace function billing_mock.meter_value(p_meter text, p_customer text, p_from bigint, p_to bigint)
returns numeric
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    with meter as (
        select data ->> 'event_time_window' as win, data #>> '{default_aggregation,formula}' as formula
        from billing_mock.objects where id = p_meter and object = 'billing.meter'
    ),
    events as (
        select e.seq, e.ts, e.value,
               case (select win from meter) when 'hour' then e.ts / 3600 when 'day' then e.ts / 86400 end as window_no
        from billing_mock.meter_events e
        where e.meter_id = p_meter and e.customer = p_customer and e.ts >= p_from and e.ts < p_to
          and e.cancelled_at is null
    ),
    kept as (
        select * from events where window_no is null
        union all
        (select distinct on (window_no) * from events where window_no is not null
         order by window_no, ts desc, seq desc)
    )
    select coalesce(case (select formula from meter)
        when 'sum' then (select sum(value) from kept)
        when 'count' then (select count(*) from kept)::numeric
        when 'last' then (select value from kept order by ts desc, seq desc limit 1)
    end, 0);
$$;

comment on function billing_mock.meter_value(text, text, bigint, bigint) is
    'A Billing Meter''s value for one customer over [from, to): per-window latest event when pre-aggregated, then sum, count or last.';
