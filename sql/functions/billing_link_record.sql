-- meter.billing_link_record(customer, meter, billing_customer, subscription, item, price, filter):
-- records what the sync worker (or `meterctl billing link`) provisioned in the engine. `filter`:
-- the priced filter the item bills ('{}': the meter whole, or its default price; decision 110).
--
-- Called after each provisioning step with what exists so far: the billing customer alone
-- (meter and item null), or the full link. Idempotent: recording the same objects again changes
-- nothing; recording different ones for an existing link is refused (a link is never silently
-- re-pointed: usage already reported to one item would be split across two).
create or replace function meter.billing_link_record(
    p_customer_id          bigint,
    p_meter_id             bigint,
    p_billing_customer_id  text,
    p_subscription_id      text,
    p_subscription_item_id text,
    p_price_id             text,
    p_price_filter         jsonb default '{}')
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_existing meter.billing_links;
begin
    if p_billing_customer_id is null then
        raise exception 'billing customer id is required' using errcode = '22023';
    end if;

    insert into meter.billing_customers as b (customer_id, billing_customer_id, subscription_id)
    values (p_customer_id, p_billing_customer_id, p_subscription_id)
    on conflict (customer_id) do update
        set subscription_id = coalesce(b.subscription_id, excluded.subscription_id)
        where b.billing_customer_id = excluded.billing_customer_id;
    if not found then
        raise exception 'customer % is already linked to billing customer %, not %', p_customer_id,
            (select billing_customer_id from meter.billing_customers where customer_id = p_customer_id),
            p_billing_customer_id using errcode = '23505';
    end if;
    if p_subscription_id is not null
       and (select subscription_id from meter.billing_customers where customer_id = p_customer_id) <> p_subscription_id then
        raise exception 'customer % is already billed through subscription %, not %', p_customer_id,
            (select subscription_id from meter.billing_customers where customer_id = p_customer_id),
            p_subscription_id using errcode = '23505';
    end if;

    if p_subscription_item_id is not null then
        select * into v_existing from meter.billing_links
        where customer_id = p_customer_id and meter_id = p_meter_id and price_filter = coalesce(p_price_filter, '{}');
        if found then
            if v_existing.subscription_item_id <> p_subscription_item_id then
                raise exception 'customer % meter % is already linked to subscription item %, not %',
                    p_customer_id, p_meter_id, v_existing.subscription_item_id, p_subscription_item_id
                    using errcode = '23505';
            end if;
            return;
        end if;
        insert into meter.billing_links (customer_id, meter_id, price_filter, subscription_item_id, price_id)
        values (p_customer_id, p_meter_id, coalesce(p_price_filter, '{}'), p_subscription_item_id, p_price_id);
        perform pg_catalog.pg_notify('meter_sync', '');
    end if;
end;
$$;

comment on function meter.billing_link_record(bigint, bigint, text, text, text, text, jsonb) is
    'Records provisioned billing objects (customer, subscription, subscription item); never re-points a link.';

revoke all on function meter.billing_link_record(bigint, bigint, text, text, text, text, jsonb) from public;
