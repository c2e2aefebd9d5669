-- meter.plan_price_set(plan, meter, model, unit_amount, package_size, tiers, filter): price a meter
-- in a plan (see meter.price_amount for the models), or the part of its usage whose dimension
-- values fall under `filter`. Validated here so that a close never meets a
-- malformed price: amounts finite and non-negative (numeric also holds NaN and Infinity, which no
-- line could be priced with), tiers JSON objects whose up_to, unit_amount and flat_amount are JSON
-- numbers, ascending, with a final up_to null.
--
-- Filters (decision 110): {dimension: value, null or [values]}, stored with each value as a sorted
-- array ({"model": "a"} is {"model": ["a"]}); null ("none") matches events without the property.
-- '{}' (the default) prices the usage no other filter of the plan and meter takes. Filters of one
-- plan and meter must not overlap (two filters overlap unless some dimension they both name has no
-- value in common), so every combination of values has one price. Only meters whose every
-- version counts, sums, takes the maximum or is a time-weighted gauge can be priced per filter,
-- on their dimensions (0A000 / 22023 otherwise).
--
-- Setting a price again replaces it, until the plan has invoiced the meter: a closed
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
    p_tiers        jsonb default null,
    p_filter       jsonb default '{}')
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
    v_filter   jsonb;
    v_other    jsonb;
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

    -- The filter, validated and normalised (meter._filter_normalize).
    v_filter := meter._filter_normalize(v_meter_id, p_filter);
    if v_filter <> '{}' then
        if exists (select 1 from meter.meter_versions v
                   where v.meter_id = v_meter_id and v.aggregation not in ('count', 'sum', 'max', 'time_weighted_sum')) then
            raise exception 'meter % counts distinct values or takes the last value: it cannot be priced per filter', p_meter
                using errcode = '0A000';
        end if;
        if exists (select 1 from meter.billing_prices b where b.meter_id = v_meter_id and b.engine_api = 'usage_records') then
            raise exception 'meter % is billed through usage records, which cannot be per filter: bill it through Billing Meters first', p_meter
                using errcode = '0A000';
        end if;
        -- Two filters overlap unless a dimension both name has no value in common.
        select pp.filter into v_other from meter.plan_prices pp
        where pp.plan_id = v_plan_id and pp.meter_id = v_meter_id and pp.filter <> '{}' and pp.filter <> v_filter
          and not exists (select 1 from pg_catalog.jsonb_each(v_filter) a join pg_catalog.jsonb_each(pp.filter) b on b.key = a.key
                          where not exists (select 1 from pg_catalog.jsonb_array_elements(a.value) x
                                            where b.value @> pg_catalog.jsonb_build_array(x)))
        limit 1;
        if found then
            raise exception 'filter % of meter % overlaps filter % of plan %: some dimension values would have two prices',
                v_filter, p_meter, v_other, p_plan
                using errcode = '22023', hint = 'make the filters disjoint on at least one dimension';
        end if;
    end if;

    -- The close's lock (meter.period_close): a close running now finishes first, and its invoices
    -- are seen by the check below; a close starting after this commits prices with the new price.
    -- Without it, a price change committed during a close would re-price that month's later
    -- adjustments.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.close'));
    -- A new filter would move usage between the lines of invoiced periods (re-pricing them
    -- when late events adjust them): refused like a changed price.
    if not exists (select 1 from meter.plan_prices p
                   where p.plan_id = v_plan_id and p.meter_id = v_meter_id and p.filter = v_filter)
       and exists (select 1 from meter.plan_prices p where p.plan_id = v_plan_id and p.meter_id = v_meter_id)
       and exists (select 1 from meter.invoices i join meter.invoice_lines l on l.invoice_id = i.id
                   where i.plan_id = v_plan_id and l.meter_id = v_meter_id and l.kind = 'usage') then
        raise exception 'plan % has invoiced meter %: a new filter would re-divide its closed periods', p_plan, p_meter
            using errcode = '55000', hint = 'create a new plan with the filters and subscribe customers to it from an open period';
    end if;
    if exists (select 1 from meter.plan_prices p
               where p.plan_id = v_plan_id and p.meter_id = v_meter_id and p.filter = v_filter
                 and (p.model, p.unit_amount, p.package_size, p.tiers) is distinct from
                     (p_model,
                      case when p_model in ('per_unit', 'package') then p_unit_amount end,
                      case when p_model = 'package' then p_package_size end,
                      case when p_model in ('graduated', 'volume') then p_tiers end))
       and exists (select 1 from meter.invoices i join meter.invoice_lines l on l.invoice_id = i.id
                   where i.plan_id = v_plan_id and l.meter_id = v_meter_id and l.kind = 'usage'
                     and l.price_filter = v_filter) then
        raise exception 'plan % has invoiced meter % at its current price: a closed period is never re-priced',
            p_plan, p_meter
            using errcode = '55000', hint = 'create a new plan with the new price and subscribe customers to it from an open period';
    end if;

    insert into meter.plan_prices as p (plan_id, meter_id, filter, model, unit_amount, package_size, tiers)
    values (v_plan_id, v_meter_id, v_filter, p_model,
            case when p_model in ('per_unit', 'package') then p_unit_amount end,
            case when p_model = 'package' then p_package_size end,
            case when p_model in ('graduated', 'volume') then p_tiers end)
    on conflict (plan_id, meter_id, filter) do update
        set model = excluded.model, unit_amount = excluded.unit_amount, package_size = excluded.package_size,
            tiers = excluded.tiers, engine_price_id = null;
end;
$$;

comment on function meter.plan_price_set(text, text, text, numeric, numeric, jsonb, jsonb) is
    'Prices a meter in a plan (per_unit, package, graduated, volume), or the usage under a filter of its dimensions, validated.';
revoke all on function meter.plan_price_set(text, text, text, numeric, numeric, jsonb, jsonb) from public;
