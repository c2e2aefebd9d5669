-- A database as the product left it before migration 0021 (events unpartitioned), built by that
-- product's own functions (Tests/migration/conversion_test.sh migrates with the sql/ of the
-- commit before 0021): events over three months, redeliveries (duplicates and conflicts),
-- cancellations, a rollup run, then more events and cancellations left pending. Then a copy of
-- what the conversion must keep, in schema conv (outside meter, untouched by migrations).
\set ON_ERROR_STOP on
select meter.customer_upsert('conv-a'), meter.customer_upsert('conv-b');
select meter.meter_upsert('conv.calls'), meter.meter_upsert('conv.tokens', 'sum');

-- Event g of the seed (its customer, meter and key follow from g) at a time, with a value; and
-- the cancellation of event g. Each block below ingests or cancels a range of them.
create function pg_temp.event(g integer, at timestamptz, value text) returns jsonb language sql as $$
    select pg_catalog.jsonb_build_object(
        'customer', case when g % 2 = 0 then 'conv-a' else 'conv-b' end,
        'meter', case when g % 3 = 0 then 'conv.tokens' else 'conv.calls' end,
        'idempotency_key', 'k-' || g, 'occurred_at', at, 'value', value,
        'properties', pg_catalog.jsonb_build_object('n', g))
$$;
create function pg_temp.cancellation(g integer) returns jsonb language sql as $$
    select pg_catalog.jsonb_build_object('customer', case when g % 2 = 0 then 'conv-a' else 'conv-b' end,
                                         'idempotency_key', 'k-' || g)
$$;

-- 3,000 events from 2026-09-01, every 37 minutes (to mid-November 2026)
select pg_catalog.count(*) from meter.event_ingest(
    (select pg_catalog.jsonb_agg(pg_temp.event(g, timestamptz '2026-09-01 00:00+00' + g * interval '37 minutes', (g % 17) || '.5'))
     from pg_catalog.generate_series(1, 3000) g),
    interval '5 minutes', interval '3 years');

-- redeliveries: ten duplicates, five conflicts
select pg_catalog.count(*) from meter.event_ingest(
    (select pg_catalog.jsonb_agg(pg_temp.event(g, timestamptz '2026-09-01 00:00+00' + g * interval '37 minutes',
                                               case when g <= 10 then (g % 17) || '.5' else '999' end))
     from pg_catalog.generate_series(1, 15) g),
    interval '5 minutes', interval '3 years');

select pg_catalog.count(*) from meter.event_cancel(
    (select pg_catalog.jsonb_agg(pg_temp.cancellation(g)) from pg_catalog.generate_series(20, 29) g));

select events_folded, cancellations_folded from meter.rollup_run();

-- left pending: 100 more events and 5 cancellations
select pg_catalog.count(*) from meter.event_ingest(
    (select pg_catalog.jsonb_agg(pg_temp.event(g, timestamptz '2026-11-10 00:00+00' + g * interval '1 minute', (g % 17) || '.5'))
     from pg_catalog.generate_series(3001, 3100) g),
    interval '5 minutes', interval '3 years');
select pg_catalog.count(*) from meter.event_cancel(
    (select pg_catalog.jsonb_agg(pg_temp.cancellation(g)) from pg_catalog.generate_series(30, 34) g));

create schema conv;
create table conv.events as select * from meter.events;
create table conv.cancellations as select * from meter.event_cancellations;
create table conv.redeliveries as select * from meter.event_redeliveries;
create table conv.rollup_hourly as select * from meter.rollup_hourly;
create table conv.watermark as select * from meter.rollup_watermark;
