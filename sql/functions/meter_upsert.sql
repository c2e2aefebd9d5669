-- meter.meter_upsert(code, aggregation, unique_property, name, unit, effective_from, dimensions):
-- creates a meter, confirms an identical one, or adds a new version of its definition. Returns the
-- meter id.
--
-- Guarantees
--   * History is never rewritten. A definition (aggregation, unique_property, dimensions) that differs from
--     the meter's latest version becomes a new version in force from effective_from, which must be
--     a UTC hour boundary in the future and after the latest version's start. Default: the next
--     UTC hour.
--   * Every hour has one definition, also in the rollups already made: the new version is refused
--     while any event of this meter at or after effective_from has been rolled up (an event up to
--     max_future ahead can be). This check holds the rollup lock (meter.rollup_run's advisory
--     lock, waiting for a running rollup), so no rollup can fold such an event in between.
--   * Name and unit are descriptive: a non-null value replaces the stored one, in place.
--   * Dimensions: up to 3 distinct property names (letters, digits, _ . : -, at most 64), grouped
--     by in meter.rollup_hourly_dims; null keeps the latest version's ('{}' for a new meter). A
--     time_weighted_sum meter's are fixed at its creation (a value holds until the next event of
--     the same dimension values: a change by version would split the series, 0A000).
create or replace function meter.meter_upsert(
    p_code            text,
    p_aggregation     text default 'count',
    p_unique_property text default null,
    p_name            text default null,
    p_unit            text default null,
    p_effective_from  timestamptz default null,
    p_dimensions      text[] default null
)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id     bigint;
    v_latest meter.meter_versions;
    v_from   timestamptz;
begin
    if p_dimensions is not null then
        if pg_catalog.cardinality(p_dimensions) > 3 then
            raise exception 'a meter has at most 3 dimensions, got %', pg_catalog.cardinality(p_dimensions)
                using errcode = '22023';
        end if;
        if exists (select 1 from pg_catalog.unnest(p_dimensions) d where d is null or d !~ '^[A-Za-z0-9_.:-]{1,64}$') then
            raise exception 'a dimension is a property name of 1-64 letters, digits, _ . : or -; got %', p_dimensions
                using errcode = '22023';
        end if;
        if (select pg_catalog.count(distinct d) from pg_catalog.unnest(p_dimensions) d) <> pg_catalog.cardinality(p_dimensions) then
            raise exception 'dimensions must be distinct, got %', p_dimensions using errcode = '22023';
        end if;
    end if;
    select id into v_id from meter.meters where code = p_code for update;
    if not found then
        insert into meter.meters (code, name, unit)
        values (p_code, p_name, p_unit)
        returning id into v_id;
        -- Version 1 is in force since forever, so every event of the meter has a definition.
        insert into meter.meter_versions (meter_id, version, aggregation, unique_property, effective_from, dimensions)
        values (v_id, 1, p_aggregation, p_unique_property, '-infinity', coalesce(p_dimensions, '{}'));
        return v_id;
    end if;

    update meter.meters
    set name = coalesce(p_name, name), unit = coalesce(p_unit, unit)
    where id = v_id;

    select * into v_latest from meter.meter_versions
    where meter_id = v_id order by version desc limit 1;
    if v_latest.aggregation = p_aggregation
       and v_latest.unique_property is not distinct from p_unique_property
       and v_latest.dimensions = coalesce(p_dimensions, v_latest.dimensions) then
        return v_id;
    end if;

    -- A new version.
    v_from := coalesce(p_effective_from, pg_catalog.date_trunc('hour', pg_catalog.now(), 'UTC') + interval '1 hour');
    if pg_catalog.date_trunc('hour', v_from, 'UTC') <> v_from then
        raise exception 'effective_from % is not on a UTC hour boundary', v_from
            using errcode = '22023', hint = 'meter definitions change at the start of an hour';
    end if;
    if v_from <= pg_catalog.now() then
        raise exception 'effective_from % is not in the future', v_from
            using errcode = '22023',
                  hint = 'a meter definition cannot change for hours that may already hold events';
    end if;
    if v_from <= v_latest.effective_from then
        raise exception 'effective_from % is not after version %''s start (%)',
            v_from, v_latest.version, v_latest.effective_from
            using errcode = '22023';
    end if;

    if (p_aggregation = 'time_weighted_sum') <> (v_latest.aggregation = 'time_weighted_sum') then
        raise exception 'meter % cannot change to or from time_weighted_sum: a gauge''s values hold across hours, versions would split them',
            pg_catalog.quote_literal(p_code)
            using errcode = '0A000', hint = 'create a new meter for the gauge';
    end if;
    if p_aggregation = 'time_weighted_sum' and coalesce(p_dimensions, v_latest.dimensions) <> v_latest.dimensions then
        raise exception 'time_weighted_sum meter % keeps its dimensions: a value holds until the next event of the same dimension values, versions would split them',
            pg_catalog.quote_literal(p_code)
            using errcode = '0A000', hint = 'create a new meter for the gauge';
    end if;
    if (p_aggregation in ('max', 'latest')) <> (v_latest.aggregation in ('max', 'latest')) and exists (
        select 1 from meter.billing_prices b where b.meter_id = v_id and b.engine_api = 'meter_events') then
        raise exception 'meter % is billed through a Billing Meter (meter events): it cannot change between max or latest and another aggregation',
            pg_catalog.quote_literal(p_code)
            using errcode = '0A000', hint = 'one engine meter has one formula (last for max and latest, sum otherwise)';
    end if;

    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));
    -- Under REPEATABLE READ or SERIALIZABLE, this transaction's snapshot can predate a rollup that
    -- committed before the lock was granted, and the check below would read the old watermark
    -- (and add a version over hours already rolled up). Locking the watermark row raises 40001
    -- (retry) when it changed after the snapshot; under READ COMMITTED it just reads the latest.
    -- (every rollup shard's row; an event is rolled up when below its customer's shard's watermark)
    perform 1 from meter.rollup_watermark for share;
    if exists (
        select 1
        from meter.events e
        join meter.rollup_watermark w on w.shard = e.customer_id % w.shard_count
        where e.meter_id = v_id and e.occurred_at >= v_from
          and (e.xid, e.id) < (w.position_xid, w.position_id)
    ) then
        raise exception 'meter % already has rolled-up events at or after %',
            pg_catalog.quote_literal(p_code), v_from
            using errcode = '55000', hint = 'choose a later effective_from';
    end if;

    insert into meter.meter_versions (meter_id, version, aggregation, unique_property, effective_from, dimensions)
    values (v_id, v_latest.version + 1, p_aggregation, p_unique_property, v_from, coalesce(p_dimensions, v_latest.dimensions));
    return v_id;
end;
$$;

comment on function meter.meter_upsert(text, text, text, text, text, timestamptz, text[]) is
    'Creates a meter, or adds a version of its definition in force from a future UTC hour; returns its id.';

revoke all on function meter.meter_upsert(text, text, text, text, text, timestamptz, text[]) from public;
