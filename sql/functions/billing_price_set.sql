-- meter.billing_price_set(meter, price_id, since, event_name, value_scale): bill a meter with a
-- price of the billing engine.
--
-- From then on every rollup change of the meter enters the outbox. The hours the meter already
-- has are enqueued now (those at or after `since`, when given), so pricing a meter late bills its
-- existing usage. Changing the price of a priced meter only affects links made afterwards
-- (existing subscription items keep their price; re-pricing a live subscription is done in the
-- engine). Returns the number of hours enqueued.
--
-- With event_name the price is on a Billing Meter of that event name: hours go out as meter
-- events (engine_api meter_events), each hour's total times 10^value_scale, which must then be
-- a whole number. Without it, legacy usage records. A max meter's hours then carry the running
-- maximum of their UTC month (its engine meter takes the last value, decision 102), a latest meter's
-- the running last value; a meter whose versions mix max or latest with other aggregations
-- cannot be billed through a Billing Meter (0A000): one
-- engine meter has one formula. A meter a plan prices per filter needs Billing Meters (0A000 with
-- usage records): each filter is sent to an engine meter of its own (decision 110).
create or replace function meter.billing_price_set(
    p_meter       text,
    p_price_id    text,
    p_since       timestamptz default null,
    p_event_name  text default null,
    p_value_scale integer default 0)
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
    if p_event_name is not null and pg_catalog.length(p_event_name) not between 1 and 100 then
        raise exception 'event_name must be 1-100 characters' using errcode = '22023';
    end if;
    if p_value_scale is null or p_value_scale not between 0 and 12 then
        raise exception 'value_scale must be between 0 and 12, got %', coalesce(p_value_scale::text, 'null')
            using errcode = '22023';
    end if;
    if p_event_name is not null and (
        select pg_catalog.count(distinct v.aggregation in ('max', 'latest')) from meter.meter_versions v where v.meter_id = v_meter_id) > 1 then
        raise exception 'meter % has max or latest versions beside others: one Billing Meter has one formula; bill it with usage records', p_meter
            using errcode = '0A000';
    end if;

    -- A meter some plan prices per filter of its dimensions is sent per filter, to an engine
    -- meter each (decision 110): usage records have no such thing.
    if p_event_name is null and exists (select 1 from meter.plan_prices pp where pp.meter_id = v_meter_id and pp.filter <> '{}') then
        raise exception 'meter % has prices per filter of its dimensions: it is billed through Billing Meters (an event name), not usage records', p_meter
            using errcode = '0A000';
    end if;

    -- Serialize with rollup_run (which reads billing_prices when writing the outbox): without
    -- the lock, a run committing concurrently could change an hour without enqueuing it.
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));

    insert into meter.billing_prices as p (meter_id, price_id, engine_api, event_name, value_scale)
    values (v_meter_id, p_price_id, case when p_event_name is null then 'usage_records' else 'meter_events' end,
            p_event_name, p_value_scale)
    on conflict (meter_id) do update
        set price_id = excluded.price_id, engine_api = excluded.engine_api, event_name = excluded.event_name,
            value_scale = excluded.value_scale, updated_at = pg_catalog.now();

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

comment on function meter.billing_price_set(text, text, timestamptz, text, integer) is
    'Bills a meter with an engine price (usage records, or meter events on a Billing Meter); enqueues the hours it already has.';

revoke all on function meter.billing_price_set(text, text, timestamptz, text, integer) from public;
