-- meter.plan_price_mirror_record(plan, meter, engine_price_id, filter): record the billing engine's
-- price object that mirrors a plan price (of the meter's usage under `filter`, as stored: '{}' for
-- the default or unfiltered price) (created by `meterctl plans mirror`). Links made afterwards for
-- customers on the plan use it (meter.billing_unlinked). A plan price changed since (which resets
-- engine_price_id) needs a new mirror.
create or replace function meter.plan_price_mirror_record(p_plan text, p_meter text, p_engine_price_id text,
                                                         p_filter jsonb default '{}')
returns void
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_engine_price_id is null or p_engine_price_id !~ '^[A-Za-z0-9_]{1,255}$' then
        raise exception 'engine price id must be 1-255 letters, digits or underscores, got %', coalesce(p_engine_price_id, 'null')
            using errcode = '22023';
    end if;
    update meter.plan_prices pp set engine_price_id = p_engine_price_id
    from meter.plans pl, meter.meters m
    where pl.id = pp.plan_id and m.id = pp.meter_id and pl.code = p_plan and m.code = p_meter
      and pp.filter = coalesce(p_filter, '{}');
    if not found then
        raise exception 'plan % has no price for meter % (filter %)', coalesce(p_plan, 'null'), coalesce(p_meter, 'null'), p_filter
            using errcode = '22023';
    end if;
end;
$$;

comment on function meter.plan_price_mirror_record(text, text, text, jsonb) is
    'Records the engine price object mirroring a plan price (used when linking customers on the plan).';
revoke all on function meter.plan_price_mirror_record(text, text, text, jsonb) from public;
