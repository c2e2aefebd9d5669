-- meter.plan_upsert(code, currency, name): create a plan, or rename an existing one. A plan's
-- currency never changes (its invoices and prices are in it): create another plan instead.
create or replace function meter.plan_upsert(p_code text, p_currency text, p_name text default null)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id       bigint;
    v_currency text;
begin
    if not exists (select 1 from meter.currencies where code = lower(p_currency)) then
        raise exception 'unknown currency % (ISO 4217, e.g. usd, eur, jpy)', coalesce(p_currency, 'null')
            using errcode = '22023';
    end if;
    select id, currency into v_id, v_currency from meter.plans where code = p_code;
    if found then
        if v_currency <> lower(p_currency) then
            raise exception 'plan % is in %, not %: a plan''s currency never changes', p_code, v_currency, lower(p_currency)
                using errcode = '22023';
        end if;
        update meter.plans set name = coalesce(p_name, name) where id = v_id;
        return v_id;
    end if;
    insert into meter.plans (code, name, currency) values (p_code, p_name, lower(p_currency)) returning id into v_id;
    return v_id;
end;
$$;

comment on function meter.plan_upsert(text, text, text) is 'Creates a plan (or renames it); its currency is fixed.';
revoke all on function meter.plan_upsert(text, text, text) from public;
