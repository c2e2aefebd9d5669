-- meter.billing_unlinked(limit): (customer, meter) pairs with hours waiting in the outbox but no
-- subscription item yet, with what the sync worker needs to provision one through the API: the
-- price (the engine price mirrored from the customer's plan, meter.plan_prices.engine_price_id,
-- else the meter's billing price), and the billing customer and subscription when it has them.
create or replace function meter.billing_unlinked(p_limit integer default 100)
returns table (
    customer_id          bigint,
    customer_external_id text,
    customer_name        text,
    meter_id             bigint,
    meter_code           text,
    price_id             text,
    billing_customer_id  text,
    subscription_id      text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    select c.id, c.external_id, c.name, m.id, m.code,
           -- the customer's plan's mirrored price when there is one, else the meter's default
           coalesce((select pp.engine_price_id
                     from meter.customer_plans cp
                     join meter.plan_prices pp on pp.plan_id = cp.plan_id and pp.meter_id = u.meter_id
                     where cp.customer_id = u.customer_id
                     order by cp.effective_from desc limit 1), p.price_id),
           bc.billing_customer_id, bc.subscription_id
    from (select distinct o.customer_id, o.meter_id
          from meter.sync_outbox o
          where o.state = 'pending'
            and not exists (select 1 from meter.billing_links l
                            where l.customer_id = o.customer_id and l.meter_id = o.meter_id)) u
    join meter.customers c on c.id = u.customer_id
    join meter.meters m on m.id = u.meter_id
    join meter.billing_prices p on p.meter_id = u.meter_id
    left join meter.billing_customers bc on bc.customer_id = u.customer_id
    order by c.id, m.id
    limit p_limit;
$$;

comment on function meter.billing_unlinked(integer) is
    'Customer/meter pairs with outbox hours but no subscription item yet (to provision).';

revoke all on function meter.billing_unlinked(integer) from public;
