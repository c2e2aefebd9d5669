-- meter.sync_retry(customer, meter): re-drive dead hours (after fixing what killed them).
-- Both filters are optional (external customer id, meter code); null means all. Attempts start
-- again from zero; an uncertain request kept on a dead hour is repeated first, as always.
-- Returns the number of hours re-driven, and wakes the sync workers.
create or replace function meter.sync_retry(
    p_customer text default null,
    p_meter    text default null)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_n bigint;
begin
    if p_customer is not null and not exists (select 1 from meter.customers where external_id = p_customer) then
        raise exception 'unknown customer %', p_customer using errcode = '22023';
    end if;
    if p_meter is not null and not exists (select 1 from meter.meters where code = p_meter) then
        raise exception 'unknown meter %', p_meter using errcode = '22023';
    end if;

    update meter.sync_outbox o
    set state = 'pending', attempts = 0, next_attempt_at = pg_catalog.now()
    where o.state = 'dead'
      and (p_customer is null or o.customer_id = (select id from meter.customers where external_id = p_customer))
      and (p_meter is null or o.meter_id = (select id from meter.meters where code = p_meter));
    get diagnostics v_n = row_count;

    if v_n > 0 then
        perform pg_catalog.pg_notify('meter_sync', '');
    end if;
    return v_n;
end;
$$;

comment on function meter.sync_retry(text, text) is
    'Moves dead outbox hours back to pending (optionally one customer and/or meter); returns how many.';

revoke all on function meter.sync_retry(text, text) from public;
