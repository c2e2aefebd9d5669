-- billing_mock.item_usage(item, from, to, aggregate_usage): a subscription item's usage over
-- [from, to) (unix seconds) as the price's aggregate_usage defines it: sum of records (default),
-- max of records, last record during the period, or last record ever (up to `to`).
create or replace function billing_mock.item_usage(p_item text, p_from bigint, p_to bigint, p_aggregate text)
returns numeric
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select coalesce(case coalesce(p_aggregate, 'sum')
        when 'sum' then (select sum(quantity) from billing_mock.usage_records
                         where subscription_item = p_item and ts >= p_from and ts < p_to)
        when 'max' then (select max(quantity) from billing_mock.usage_records
                         where subscription_item = p_item and ts >= p_from and ts < p_to)
        when 'last_during_period' then (select quantity from billing_mock.usage_records
                                        where subscription_item = p_item and ts >= p_from and ts < p_to
                                        order by ts desc limit 1)
        when 'last_ever' then (select quantity from billing_mock.usage_records
                               where subscription_item = p_item and ts < p_to
                               order by ts desc limit 1)
    end, 0);
$$;

comment on function billing_mock.item_usage(text, bigint, bigint, text) is
    'A subscription item''s usage over [from, to) (unix seconds) by the price''s aggregate_usage: sum, max, last_during_period, last_ever.';
