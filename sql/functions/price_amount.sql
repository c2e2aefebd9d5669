-- meter.price_amount(model, unit_amount, package_size, tiers, quantity): the amount of one invoice
-- line, in integer minor units. THE rounding rule of meter lives here and only here:
--
--   the exact amount is computed in numeric (no floating point anywhere), then rounded ONCE, per
--   line, to a whole minor unit, half away from zero (Postgres round(numeric): 0.5 -> 1, 2.5 -> 3).
--   Invoice totals are sums of rounded lines, so every line can be checked on its own.
--
-- Models (amounts in minor units, possibly fractional, e.g. 0.05 = 1/20 cent per unit):
--   per_unit   quantity × unit_amount
--   package    ceil(quantity / package_size) × unit_amount         (blocks of N, rounded up)
--   graduated  Σ over tiers of (units within the tier × its unit_amount) + flat_amount of each tier reached
--   volume     quantity × unit_amount of the tier the quantity falls in + that tier's flat_amount
-- tiers: a JSON array of {"up_to": number | null, "unit_amount": number, "flat_amount": number},
-- ascending, the last with up_to null (infinity). A quantity exactly on a boundary belongs to the
-- lower tier (up_to is inclusive). Zero quantity costs nothing (no flat amount either).
create or replace function meter.price_amount(
    p_model        text,
    p_unit_amount  numeric,
    p_package_size numeric,
    p_tiers        jsonb,
    p_quantity     numeric)
returns bigint
language plpgsql
immutable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_q      numeric := coalesce(p_quantity, 0);
    v_amount numeric := 0;
    v_lower  numeric := 0;
    v_upper  numeric;
    v_tier   jsonb;
begin
    if v_q < 0 then
        raise exception 'quantity must not be negative, got %', v_q using errcode = '22023';
    end if;
    if v_q = 0 then
        return 0;
    end if;
    case p_model
        when 'per_unit' then
            v_amount := v_q * p_unit_amount;
        when 'package' then
            v_amount := ceil(v_q / p_package_size) * p_unit_amount;
        when 'graduated' then
            for v_tier in select t from pg_catalog.jsonb_array_elements(p_tiers) t loop
                exit when v_q <= v_lower;
                v_upper := (v_tier ->> 'up_to')::numeric;
                v_amount := v_amount
                    + (least(v_q, coalesce(v_upper, v_q)) - v_lower) * coalesce((v_tier ->> 'unit_amount')::numeric, 0)
                    + coalesce((v_tier ->> 'flat_amount')::numeric, 0);
                exit when v_upper is null;
                v_lower := v_upper;
            end loop;
        when 'volume' then
            for v_tier in select t from pg_catalog.jsonb_array_elements(p_tiers) t loop
                v_upper := (v_tier ->> 'up_to')::numeric;
                if v_upper is null or v_q <= v_upper then
                    v_amount := v_q * coalesce((v_tier ->> 'unit_amount')::numeric, 0)
                                + coalesce((v_tier ->> 'flat_amount')::numeric, 0);
                    exit;
                end if;
            end loop;
        else
            raise exception 'unknown price model %', coalesce(p_model, 'null') using errcode = '22023';
    end case;
    return round(v_amount)::bigint;
end;
$$;

comment on function meter.price_amount(text, numeric, numeric, jsonb, numeric) is
    'Amount of a line in minor units: exact numeric, rounded once per line, half away from zero.';

revoke all on function meter.price_amount(text, numeric, numeric, jsonb, numeric) from public;

-- meter.reconciliation prices with it, with the rights of whoever reads the view (a pure function).
grant execute on function meter.price_amount(text, numeric, numeric, jsonb, numeric) to meter_analyst;
