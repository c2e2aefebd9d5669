-- meter.plan_price_set(plan, meter, model, unit_amount, package_size, tiers): price a meter in a
-- plan (see meter.price_amount for the models). Validated here so that a close never meets a
-- malformed price: amounts finite and non-negative (numeric also holds NaN and Infinity, which no
-- line could be priced with), tiers JSON objects whose up_to, unit_amount and flat_amount are JSON
-- numbers, ascending, with a final up_to null.
--
-- Setting a meter's price again replaces it, until the plan has invoiced the meter: a closed
-- period is re-priced with its plan's prices when late events adjust it (meter.period_close) and
-- in meter.reconciliation, so a changed price would re-invoice every closed period of every
-- customer on the plan. That change is refused (55000): create a new plan and subscribe customers
-- to it from an open period. Setting the very same price again is accepted. The check holds the
-- close's advisory lock, so it cannot miss the invoices of a close running at the same time.
create or replace function meter.plan_price_set(
    p_plan         text,
    p_meter        text,
    p_model        text,
    p_unit_amount  numeric default null,
    p_package_size numeric default null,
    p_tiers        jsonb default null)
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_plan_id  bigint;
    v_meter_id bigint;
    v_prev     numeric := 0;
    v_tier     jsonb;
    v_n        integer;
    v_i        integer := 0;
begin
    select id into v_plan_id from meter.plans where code = p_plan;
    if not found then raise exception 'unknown plan %', coalesce(p_plan, 'null') using errcode = '22023'; end if;
    select id into v_meter_id from meter.meters where code = p_meter;
    if not found then raise exception 'unknown meter %', coalesce(p_meter, 'null') using errcode = '22023'; end if;
    if p_model not in ('per_unit', 'package', 'graduated', 'volume') or p_model is null then
        raise exception 'model must be per_unit, package, graduated or volume, got %', coalesce(p_model, 'null')
            using errcode = '22023';
    end if;
    -- (NaN compares above every number, Infinity included: "< 'Infinity'" excludes both.)
    if p_model in ('per_unit', 'package')
       and (p_unit_amount is null or not (p_unit_amount >= 0 and p_unit_amount < 'Infinity')) then
        raise exception '% needs a non-negative unit_amount', p_model using errcode = '22023';
    end if;
    if p_model = 'package'
       and (p_package_size is null or not (p_package_size > 0 and p_package_size < 'Infinity')) then
        raise exception 'package needs a positive package_size' using errcode = '22023';
    end if;
    if p_model in ('graduated', 'volume') then
        if p_tiers is null or pg_catalog.jsonb_typeof(p_tiers) <> 'array' or pg_catalog.jsonb_array_length(p_tiers) = 0 then
            raise exception '% needs tiers: a JSON array of {"up_to", "unit_amount", "flat_amount"}', p_model
                using errcode = '22023';
        end if;
        v_n := pg_catalog.jsonb_array_length(p_tiers);
        for v_tier in select t from pg_catalog.jsonb_array_elements(p_tiers) t loop
            v_i := v_i + 1;
            if pg_catalog.jsonb_typeof(v_tier) <> 'object'
               or coalesce(pg_catalog.jsonb_typeof(v_tier -> 'up_to'), 'null') not in ('number', 'null')
               or coalesce(pg_catalog.jsonb_typeof(v_tier -> 'unit_amount'), 'null') not in ('number', 'null')
               or coalesce(pg_catalog.jsonb_typeof(v_tier -> 'flat_amount'), 'null') not in ('number', 'null') then
                raise exception 'tier %: must be an object whose up_to, unit_amount and flat_amount are numbers, got %',
                    v_i, v_tier using errcode = '22023';
            end if;
            if coalesce((v_tier ->> 'unit_amount')::numeric, 0) < 0 or coalesce((v_tier ->> 'flat_amount')::numeric, 0) < 0 then
                raise exception 'tier %: amounts must not be negative', v_i using errcode = '22023';
            end if;
            if v_i < v_n then
                if (v_tier ->> 'up_to') is null or (v_tier ->> 'up_to')::numeric <= v_prev then
                    raise exception 'tier %: up_to must be a number above the previous tier''s (%)', v_i, v_prev
                        using errcode = '22023';
                end if;
                v_prev := (v_tier ->> 'up_to')::numeric;
            elsif (v_tier ->> 'up_to') is not null then
                raise exception 'the last tier must have "up_to": null (no upper bound)' using errcode = '22023';
            end if;
        end loop;
    end if;

    -- The close's lock (meter.period_close): a close running now finishes first, and its invoices
    -- are seen by the check below; a close starting after this commits prices with the new price.
    -- Without it, a price change committed during a close would re-price that month's later
    -- adjustments.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.close'));
    if exists (select 1 from meter.plan_prices p
               where p.plan_id = v_plan_id and p.meter_id = v_meter_id
                 and (p.model, p.unit_amount, p.package_size, p.tiers) is distinct from
                     (p_model,
                      case when p_model in ('per_unit', 'package') then p_unit_amount end,
                      case when p_model = 'package' then p_package_size end,
                      case when p_model in ('graduated', 'volume') then p_tiers end))
       and exists (select 1 from meter.invoices i join meter.invoice_lines l on l.invoice_id = i.id
                   where i.plan_id = v_plan_id and l.meter_id = v_meter_id and l.kind = 'usage') then
        raise exception 'plan % has invoiced meter % at its current price: a closed period is never re-priced',
            p_plan, p_meter
            using errcode = '55000', hint = 'create a new plan with the new price and subscribe customers to it from an open period';
    end if;

    insert into meter.plan_prices as p (plan_id, meter_id, model, unit_amount, package_size, tiers)
    values (v_plan_id, v_meter_id, p_model,
            case when p_model in ('per_unit', 'package') then p_unit_amount end,
            case when p_model = 'package' then p_package_size end,
            case when p_model in ('graduated', 'volume') then p_tiers end)
    on conflict (plan_id, meter_id) do update
        set model = excluded.model, unit_amount = excluded.unit_amount, package_size = excluded.package_size,
            tiers = excluded.tiers, engine_price_id = null;
end;
$$;

comment on function meter.plan_price_set(text, text, text, numeric, numeric, jsonb) is
    'Prices a meter in a plan (per_unit, package, graduated, volume), validated.';
revoke all on function meter.plan_price_set(text, text, text, numeric, numeric, jsonb) from public;
