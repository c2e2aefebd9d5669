-- meter.billing_price_set(meter, price_id): bill a meter with a price of the billing engine.
--
-- From then on every rollup change of the meter enters the outbox. The hours the meter already
-- has are enqueued now (those at or after `since`, when given), so pricing a meter late bills its
-- existing usage. Changing the price of a priced meter only affects links made afterwards
-- (existing subscription items keep their price; re-pricing a live subscription is done in the
-- engine). Returns the number of hours enqueued.
create or replace function meter.billing_price_set(
    p_meter    text,
    p_price_id text,
    p_since    timestamptz default null)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_meter_id bigint;
    v_n        bigint;
begin
    select id into v_meter_id from meter.meters where code = p_meter;
    if not found then
        raise exception 'unknown meter %', coalesce(p_meter, 'null') using errcode = '22023';
    end if;
    if p_price_id is null or p_price_id !~ '^[A-Za-z0-9_]{1,255}$' then
        raise exception 'price id must be 1-255 letters, digits or underscores, got %', coalesce(p_price_id, 'null')
            using errcode = '22023';
    end if;

    -- Serialize with rollup_run (which reads billing_prices when writing the outbox): without
    -- the lock, a run committing concurrently could change an hour without enqueuing it.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));

    insert into meter.billing_prices as p (meter_id, price_id)
    values (v_meter_id, p_price_id)
    on conflict (meter_id) do update set price_id = excluded.price_id, updated_at = pg_catalog.now();

    insert into meter.sync_outbox (customer_id, meter_id, hour, revision)
    select r.customer_id, r.meter_id, r.hour, r.revision
    from meter.rollup_hourly r
    where r.meter_id = v_meter_id and (p_since is null or r.hour >= p_since)
    on conflict (customer_id, meter_id, hour) do nothing;
    get diagnostics v_n = row_count;

    perform pg_catalog.pg_notify('meter_sync', '');
    return v_n;
end;
$$;

comment on function meter.billing_price_set(text, text, timestamptz) is
    'Bills a meter with an engine price; enqueues the hours it already has. Returns hours enqueued.';

revoke all on function meter.billing_price_set(text, text, timestamptz) from public;
