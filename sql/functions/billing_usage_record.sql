-- meter.billing_usage_record(customer, meter, start, end, api, object, value, scale, filter):
-- stores the engine's usage figure of one (customer, meter, period, priced filter), as the engine
-- answered it.
--
-- Replaces an earlier fetch of the same period (the engine's figure is the newest one asked);
-- quantity = value / 10^scale exactly (numeric), the figure in the meter's own unit. Refuses a
-- negative scale or one above 12 (22023), as meter.billing_prices does.
create or replace function meter.billing_usage_record(
    p_customer_id   bigint,
    p_meter_id      bigint,
    p_period_start  timestamptz,
    p_period_end    timestamptz,
    p_engine_api    text,
    p_engine_object text,
    p_engine_value  numeric,
    p_value_scale   integer,
    p_price_filter  jsonb default '{}')
returns numeric
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_quantity numeric;
begin
    if p_value_scale is null or p_value_scale not between 0 and 12 then
        raise exception 'value scale must be 0 to 12, got %', coalesce(p_value_scale::text, 'null') using errcode = '22023';
    end if;
    if p_engine_value is null then
        raise exception 'the engine''s value is required' using errcode = '22023';
    end if;
    v_quantity := pg_catalog.trim_scale(p_engine_value / (10::numeric ^ p_value_scale));
    insert into meter.billing_usage as u (customer_id, meter_id, price_filter, period_start, period_end, engine_api,
                                          engine_object, engine_value, value_scale, quantity)
    values (p_customer_id, p_meter_id, coalesce(p_price_filter, '{}'), p_period_start, p_period_end, p_engine_api,
            p_engine_object, p_engine_value, p_value_scale, v_quantity)
    on conflict (customer_id, meter_id, period_start, price_filter) do update
        set period_end = excluded.period_end, engine_api = excluded.engine_api, engine_object = excluded.engine_object,
            engine_value = excluded.engine_value, value_scale = excluded.value_scale, quantity = excluded.quantity,
            fetched_at = pg_catalog.now();
    return v_quantity;
end;
$$;

comment on function meter.billing_usage_record(bigint, bigint, timestamptz, timestamptz, text, text, numeric, integer, jsonb) is
    'Stores (replaces) the engine''s usage figure of a (customer, meter, period), in engine units and in ours.';

revoke all on function meter.billing_usage_record(bigint, bigint, timestamptz, timestamptz, text, text, numeric, integer, jsonb) from public;
