-- meter.customer_subscribe(customer, plan, from_period): put a customer on a plan from a billing
-- period on ('YYYY-MM'). A closed period is history: subscribing from it is refused. Once invoiced,
-- a customer stays in its currency (adjustments of old periods land on new invoices).
create or replace function meter.customer_subscribe(p_customer text, p_plan text, p_from text)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_customer_id bigint;
    v_plan_id     bigint;
begin
    select id into v_customer_id from meter.customers where external_id = p_customer;
    if not found then raise exception 'unknown customer %', coalesce(p_customer, 'null') using errcode = '22023'; end if;
    select id into v_plan_id from meter.plans where code = p_plan;
    if not found then raise exception 'unknown plan %', coalesce(p_plan, 'null') using errcode = '22023'; end if;
    if p_from is null or p_from !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' then
        raise exception 'from must be a period YYYY-MM, got %', coalesce(p_from, 'null') using errcode = '22023';
    end if;
    if exists (select 1 from meter.invoices where customer_id = v_customer_id and period >= p_from) then
        raise exception 'customer % has a closed period at or after %: plans change from an open period only',
            p_customer, p_from using errcode = '55000';
    end if;
    -- Adjustments for a closed period land on a later invoice: every invoice of a customer must
    -- be in one currency, so a plan in another currency is refused once the customer has one.
    if exists (select 1 from meter.invoices i where i.customer_id = v_customer_id
               and i.currency <> (select currency from meter.plans where id = v_plan_id)) then
        raise exception 'customer % is invoiced in %, plan % is in %: a customer''s currency never changes', p_customer,
            (select i.currency from meter.invoices i where i.customer_id = v_customer_id limit 1), p_plan,
            (select currency from meter.plans where id = v_plan_id)
            using errcode = '55000', hint = 'create a plan in the customer''s currency';
    end if;
    insert into meter.customer_plans (customer_id, effective_from, plan_id)
    values (v_customer_id, p_from, v_plan_id)
    on conflict (customer_id, effective_from) do update set plan_id = excluded.plan_id;
end;
$$;

comment on function meter.customer_subscribe(text, text, text) is 'Puts a customer on a plan from a period (YYYY-MM) on.';
revoke all on function meter.customer_subscribe(text, text, text) from public;
