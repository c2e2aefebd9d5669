-- meter.billing_unlinked(limit): (customer, meter, priced filter) lines with hours waiting in the
-- outbox but no subscription item yet, with what the sync worker needs to provision one through
-- the API: the price (the engine price mirrored from the customer's plan,
-- meter.plan_prices.engine_price_id, else the meter's billing price), and the billing customer and
-- subscription when it has them. A meter the customer's (latest) plan prices per filter has one
-- line per price of the plan for it, each its own item (decision 110); any other meter one line,
-- price_filter '{}'. A filter whose plan price is not mirrored has no price to link: not listed.
create or replace function meter.billing_unlinked(p_limit integer default 100)
returns table (
    customer_id          bigint,
    customer_external_id text,
    customer_name        text,
    meter_id             bigint,
    meter_code           text,
    price_filter         jsonb,
    price_id             text,
    billing_customer_id  text,
    subscription_id      text)
language sql
stable
set search_path = pg_catalog, pg_temp
as $$
    with pending as (
        select distinct o.customer_id, o.meter_id from meter.sync_outbox o where o.state = 'pending'
    ),
    plan_of as (
        select pd.customer_id, pd.meter_id,
               (select cp.plan_id from meter.customer_plans cp where cp.customer_id = pd.customer_id
                order by cp.effective_from desc limit 1) as plan_id
        from pending pd
    ),
    lines as (
        -- per filter when the plan prices the meter per filter
        select po.customer_id, po.meter_id, pp.filter as price_filter, pp.engine_price_id as price_id
        from plan_of po join meter.plan_prices pp on pp.plan_id = po.plan_id and pp.meter_id = po.meter_id
        where exists (select 1 from meter.plan_prices f
                      where f.plan_id = po.plan_id and f.meter_id = po.meter_id and f.filter <> '{}'::jsonb)
          and pp.engine_price_id is not null
        union all
        -- else the meter whole: the plan's mirrored price, else the meter's default
        select po.customer_id, po.meter_id, '{}'::jsonb,
               coalesce((select pp.engine_price_id from meter.plan_prices pp
                         where pp.plan_id = po.plan_id and pp.meter_id = po.meter_id and pp.filter = '{}'::jsonb),
                        p.price_id)
        from plan_of po join meter.billing_prices p on p.meter_id = po.meter_id
        where not exists (select 1 from meter.plan_prices f
                          where f.plan_id = po.plan_id and f.meter_id = po.meter_id and f.filter <> '{}'::jsonb)
    )
    select c.id, c.external_id, c.name, m.id, m.code, u.price_filter, u.price_id,
           bc.billing_customer_id, bc.subscription_id
    from lines u
    join meter.customers c on c.id = u.customer_id
    join meter.meters m on m.id = u.meter_id
    join meter.billing_prices p on p.meter_id = u.meter_id
    left join meter.billing_customers bc on bc.customer_id = u.customer_id
    where not exists (select 1 from meter.billing_links l
                      where l.customer_id = u.customer_id and l.meter_id = u.meter_id and l.price_filter = u.price_filter)
    order by c.id, m.id, u.price_filter
    limit p_limit;
$$;

comment on function meter.billing_unlinked(integer) is
    'Customer/meter lines (per priced filter) with outbox hours but no subscription item yet (to provision).';

revoke all on function meter.billing_unlinked(integer) from public;
