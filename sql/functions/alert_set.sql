-- meter.alert_set(customer, plan, meter, kind, threshold): a threshold alert, for one customer or
-- for every customer of a plan (exactly one of the two): kind quantity (the meter's period
-- quantity reaches threshold), amount (the period's usage lines reach threshold minor units; no
-- meter), or limit_share (the meter's quantity reaches threshold x the plan's whole-meter limit,
-- e.g. 0.8). It fires at most once per customer and period, when the rollup first reaches it
-- (meter._alerts_evaluate), as an alert.triggered webhook. Returns the alert's id.
create or replace function meter.alert_set(
    p_customer  text,
    p_plan      text,
    p_meter     text,
    p_kind      text,
    p_threshold numeric)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_customer bigint;
    v_plan     bigint;
    v_meter    bigint;
    v_id       bigint;
begin
    if (p_customer is null) = (p_plan is null) then
        raise exception 'an alert is for a customer or for a plan (one of the two)' using errcode = '22023';
    end if;
    if p_kind is null or p_kind not in ('quantity', 'amount', 'limit_share') then
        raise exception 'kind must be quantity, amount or limit_share, got %', coalesce(p_kind, 'null') using errcode = '22023';
    end if;
    if p_threshold is null or not (p_threshold > 0 and p_threshold < 'Infinity') then
        raise exception 'threshold must be a positive finite number' using errcode = '22023';
    end if;
    if p_customer is not null then
        select id into v_customer from meter.customers where external_id = p_customer;
        if not found then raise exception 'unknown customer %', p_customer using errcode = '22023'; end if;
    else
        select id into v_plan from meter.plans where code = p_plan;
        if not found then raise exception 'unknown plan %', p_plan using errcode = '22023'; end if;
    end if;
    if (p_kind = 'amount') <> (p_meter is null) then
        raise exception 'an amount alert has no meter; quantity and limit_share alerts need one' using errcode = '22023';
    end if;
    if p_meter is not null then
        select id into v_meter from meter.meters where code = p_meter;
        if not found then raise exception 'unknown meter %', p_meter using errcode = '22023'; end if;
    end if;
    insert into meter.alerts (customer_id, plan_id, meter_id, kind, threshold)
    values (v_customer, v_plan, v_meter, p_kind, p_threshold)
    returning id into v_id;
    return v_id;
end;
$$;

comment on function meter.alert_set(text, text, text, text, numeric) is
    'Creates a threshold alert for a customer or a plan (quantity, amount, share of a limit); fired once per period.';
revoke all on function meter.alert_set(text, text, text, text, numeric) from public;
