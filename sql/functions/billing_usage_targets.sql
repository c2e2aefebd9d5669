-- meter.billing_usage_targets(period): what to ask the billing engine for a period's usage.
--
-- One row per billed (customer, meter, priced filter): the customer has a billing customer and a
-- subscription item for the line (meter.billing_links), and the meter a price in the engine; a
-- filter's engine meter is the meter's event name plus meter._line_suffix (decision 110). Carries what the request needs (the
-- engine API, its event name and value scale, the engine's customer and subscription item) and
-- the period's UTC bounds in the customer's billing timezone (meter.billing_period). The caller
-- (MeterCore EngineUsage) fetches each and records it with meter.billing_usage_record().
create or replace function meter.billing_usage_targets(p_period text)
returns table (
    customer_id          bigint,
    meter_id             bigint,
    customer             text,
    meter                text,
    price_filter         jsonb,
    billing_customer_id  text,
    subscription_item_id text,
    engine_api           text,
    event_name           text,
    value_scale          smallint,
    period_start         timestamptz,
    period_end           timestamptz)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select l.customer_id, l.meter_id, c.external_id, m.code, l.price_filter, bc.billing_customer_id, l.subscription_item_id,
           p.engine_api, p.event_name || meter._line_suffix(l.price_filter), p.value_scale, b.period_start, b.period_end
    from meter.billing_links l
    join meter.billing_customers bc on bc.customer_id = l.customer_id
    join meter.billing_prices p on p.meter_id = l.meter_id
    join meter.customers c on c.id = l.customer_id
    join meter.meters m on m.id = l.meter_id
    cross join lateral meter.billing_period(l.customer_id, p_period) b
    order by c.external_id, m.code, l.price_filter
$$;

comment on function meter.billing_usage_targets(text) is
    'The billed (customer, meter, priced filter) lines of a period, with what to ask the engine for their usage.';

revoke all on function meter.billing_usage_targets(text) from public;
