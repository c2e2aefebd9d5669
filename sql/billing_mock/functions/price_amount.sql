-- billing_mock.price_amount(price, quantity): the amount of a line, in minor units, exact.
--
-- per_unit: quantity (after transform_quantity: divided by divide_by, rounded up or down to a
-- whole package) times unit_amount_decimal (or unit_amount). tiered/graduated: each tier's units
-- at that tier's unit price, plus the flat amount of every tier reached; tiered/volume: every unit
-- at the price of the tier the total falls in, plus that tier's flat amount. The exact result is
-- rounded once, per line, half away from zero, to a whole minor unit (docs/decisions.md).
create or replace function billing_mock.price_amount(p_price jsonb, p_quantity numeric)
returns bigint
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_q      numeric := coalesce(p_quantity, 0);
    v_amount numeric := 0;
    v_tier   jsonb;
    v_lower  numeric := 0;
    v_upper  numeric;
    v_unit   numeric;
    v_flat   numeric;
begin
    if p_price -> 'transform_quantity' is not null and jsonb_typeof(p_price -> 'transform_quantity') = 'object' then
        v_q := v_q / (p_price #>> '{transform_quantity,divide_by}')::numeric;
        v_q := case p_price #>> '{transform_quantity,round}' when 'down' then floor(v_q) else ceil(v_q) end;
    end if;

    if coalesce(p_price ->> 'billing_scheme', 'per_unit') = 'per_unit' then
        v_amount := v_q * coalesce((p_price ->> 'unit_amount_decimal')::numeric, (p_price ->> 'unit_amount')::numeric, 0);
    elsif p_price ->> 'tiers_mode' = 'volume' then
        for v_tier in select t from jsonb_array_elements(p_price -> 'tiers') t loop
            v_upper := (v_tier ->> 'up_to')::numeric;  -- null = infinity
            if v_upper is null or v_q <= v_upper then
                v_unit := coalesce((v_tier ->> 'unit_amount_decimal')::numeric, (v_tier ->> 'unit_amount')::numeric, 0);
                v_flat := coalesce((v_tier ->> 'flat_amount_decimal')::numeric, (v_tier ->> 'flat_amount')::numeric, 0);
                v_amount := v_q * v_unit + case when v_q > 0 then v_flat else 0 end;
                exit;
            end if;
        end loop;
    else  -- graduated
        for v_tier in select t from jsonb_array_elements(p_price -> 'tiers') t loop
            exit when v_q <= v_lower;
            v_upper := (v_tier ->> 'up_to')::numeric;
            v_unit := coalesce((v_tier ->> 'unit_amount_decimal')::numeric, (v_tier ->> 'unit_amount')::numeric, 0);
            v_flat := coalesce((v_tier ->> 'flat_amount_decimal')::numeric, (v_tier ->> 'flat_amount')::numeric, 0);
            v_amount := v_amount + (least(v_q, coalesce(v_upper, v_q)) - v_lower) * v_unit + v_flat;
            exit when v_upper is null;
            v_lower := v_upper;
        end loop;
    end if;
    return round(v_amount)::bigint;
end;
$$;

comment on function billing_mock.price_amount(jsonb, numeric) is
    'The amount of a line in minor units, exact, rounded once half away from zero (per_unit, package, graduated, volume).';
