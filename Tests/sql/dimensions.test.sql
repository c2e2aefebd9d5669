-- Meter dimensions (0012_meter_dimensions, issue 15): a meter declares up to 3 properties its usage
-- is grouped by; meter.rollup_run folds each hour per combination of their values into
-- meter.rollup_hourly_dims in the same statements as rollup_hourly (an event without a property
-- is grouped under null for it, never dropped; values are the property's text, so 4 and "4" are
-- one value); cancellations subtract from their group and recompute its max; late events add to
-- theirs; meter.rollup_verify recomputes the groups from raw events; meter.usage groups and
-- filters by them. meter_upsert validates and versions the dimensions.
--
-- Emulated history as in rollup_run.test.sql: events of long-finished transactions (xid 100,
-- then 101 for the late one); the suite runs on a freshly migrated database.
begin;
select plan(25);
\ir support/fixtures.sql

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-dm-a') as cust,
       meter.meter_upsert('tap.dm.tokens', 'sum', null, null, null, null, array['model', 'region']) as m_tokens,
       meter.meter_upsert('tap.dm.peak', 'max', null, null, null, null, array['model']) as m_peak,
       meter.meter_upsert('tap.dm.users', 'unique_count', 'user', null, null, null, array['model']) as m_users,
       meter.meter_upsert('tap.dm.plain', 'count') as m_plain;

-- ---------------------------------------------------------------------------------------------
-- meter_upsert: dimensions are validated and versioned.
-- ---------------------------------------------------------------------------------------------
select results_eq($$select m.code, v.dimensions from meter.meter_versions v join meter.meters m on m.id = v.meter_id
                    where m.code like 'tap.dm.%' order by 1$$,
                  $$values ('tap.dm.peak'::text, array['model']::text[]), ('tap.dm.plain', '{}'),
                           ('tap.dm.tokens', array['model', 'region']), ('tap.dm.users', array['model'])$$,
                  'meter_upsert stores the dimensions with version 1 ({} without)');
select throws_ok($$select meter.meter_upsert('tap.dm.x', 'sum', null, null, null, null, array['a', 'b', 'c', 'd'])$$,
                 '22023', null, 'at most 3 dimensions (22023)');
select throws_ok($$select meter.meter_upsert('tap.dm.x', 'sum', null, null, null, null, array['a', 'a'])$$,
                 '22023', null, 'dimensions are distinct (22023)');
select throws_ok($$select meter.meter_upsert('tap.dm.x', 'sum', null, null, null, null, array['bad name'])$$,
                 '22023', null, 'a dimension is a property name (22023)');
select is(meter.meter_upsert('tap.dm.tokens', 'sum'), (select m_tokens from fx),
          'the same definition without dimensions given keeps them: no new version');
select results_eq($$select version, dimensions from meter.meter_versions where meter_id = (select m_plain from fx) order by version$$,
                  $$values (1, '{}'::text[])$$, '... and for a meter without dimensions');

-- ---------------------------------------------------------------------------------------------
-- The fold.
-- ---------------------------------------------------------------------------------------------
select pg_temp.put('tap-dm-a', 'tap.dm.tokens', 't1', '2024-03-10 10:05+00', 100, '{"model": "gpt-4o", "region": "eu"}');
select pg_temp.put('tap-dm-a', 'tap.dm.tokens', 't2', '2024-03-10 10:10+00', 50, '{"model": "gpt-4o", "region": "eu"}');
select pg_temp.put('tap-dm-a', 'tap.dm.tokens', 't3', '2024-03-10 10:20+00', 10, '{"model": "mini", "region": "us", "other": 1}');
select pg_temp.put('tap-dm-a', 'tap.dm.tokens', 't4', '2024-03-10 10:30+00', 5, '{"model": "gpt-4o"}');
select pg_temp.put('tap-dm-a', 'tap.dm.tokens', 't5', '2024-03-10 10:40+00', 1, '{}');
select pg_temp.put('tap-dm-a', 'tap.dm.tokens', 't6', '2024-03-10 10:50+00', 2, '{"model": 4, "region": "eu"}');
select pg_temp.put('tap-dm-a', 'tap.dm.tokens', 't7', '2024-03-10 10:55+00', 3, '{"model": "4", "region": "eu"}');
select pg_temp.put('tap-dm-a', 'tap.dm.tokens', 't8', '2024-03-10 11:05+00', 7, '{"model": "gpt-4o", "region": "eu"}');
select pg_temp.put('tap-dm-a', 'tap.dm.peak', 'p1', '2024-03-10 10:05+00', 5, '{"model": "a"}');
select pg_temp.put('tap-dm-a', 'tap.dm.peak', 'p2', '2024-03-10 10:15+00', 9, '{"model": "a"}');
select pg_temp.put('tap-dm-a', 'tap.dm.peak', 'p3', '2024-03-10 10:25+00', 3, '{"model": "b"}');
select pg_temp.put('tap-dm-a', 'tap.dm.plain', 'n1', '2024-03-10 10:25+00', 1, '{"model": "b"}');
select pg_temp.put('tap-dm-a', 'tap.dm.users', 'u1', '2024-03-10 10:25+00', 1, '{"model": "b", "user": "x"}');

create temp view dims as
select m.code as meter, x.hour, x.dims, x.event_count, x.quantity, x.max_value
from meter.rollup_hourly_dims x join meter.meters m on m.id = x.meter_id
where m.code like 'tap.dm.%';

select is((select events_folded from meter.rollup_run()), 13::bigint, 'rollup_run folds the 13 events');
select results_eq(
    $$select hour, dims::text, event_count, quantity from dims where meter = 'tap.dm.tokens'
      order by hour, dims::text collate "C"$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, '{"model": "4", "region": "eu"}'::text, 2::bigint, 5::numeric),
             ('2024-03-10 10:00+00', '{"model": "gpt-4o", "region": "eu"}', 2, 150),
             ('2024-03-10 10:00+00', '{"model": "gpt-4o", "region": null}', 1, 5),
             ('2024-03-10 10:00+00', '{"model": "mini", "region": "us"}', 1, 10),
             ('2024-03-10 10:00+00', '{"model": null, "region": null}', 1, 1),
             ('2024-03-10 11:00+00', '{"model": "gpt-4o", "region": "eu"}', 1, 7)$$,
    'one row per hour and value combination; a missing property is null (never dropped); 4 and "4" are one value');
select is_empty(
    $$select r.hour from meter.rollup_hourly r join fx on r.meter_id in (fx.m_tokens, fx.m_peak)
      left join (select meter_id, hour, sum(event_count) as n, sum(quantity) as q, max(max_value) as mx
                 from meter.rollup_hourly_dims group by 1, 2) d on d.meter_id = r.meter_id and d.hour = r.hour
      where (d.n, d.q, d.mx) is distinct from (r.event_count, r.quantity, r.max_value)$$,
    'every hour''s dimension rows sum to its rollup_hourly row (count, sum; max of maxima)');
select results_eq($$select dims::text, max_value from dims where meter = 'tap.dm.peak' order by dims::text collate "C"$$,
                  $$values ('{"model": "a"}'::text, 9::numeric), ('{"model": "b"}', 3)$$,
                  'a max meter keeps each group''s maximum');
select is((select pg_catalog.count(*) from dims where meter = 'tap.dm.plain'), 0::bigint,
          'a meter without dimensions has no dimension rows');
select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'rollup_verify: the dimension rows agree with raw events');

-- ---------------------------------------------------------------------------------------------
-- Cancellations and a late event.
-- ---------------------------------------------------------------------------------------------
select meter.event_cancel(pg_catalog.jsonb_build_array(
    pg_catalog.jsonb_build_object('customer', 'tap-dm-a', 'idempotency_key', 't2'),
    pg_catalog.jsonb_build_object('customer', 'tap-dm-a', 'idempotency_key', 'p2')));
select is((select cancellations_folded from meter.rollup_run()), 2::bigint, 'both cancellations are folded');
select results_eq($$select event_count, quantity from dims where meter = 'tap.dm.tokens'
                    and hour = '2024-03-10 10:00+00' and dims = '{"model": "gpt-4o", "region": "eu"}'$$,
                  $$values (1::bigint, 100::numeric)$$, 'the cancelled event left its group (150 - 50)');
select results_eq($$select dims::text, max_value from dims where meter = 'tap.dm.peak' order by dims::text collate "C"$$,
                  $$values ('{"model": "a"}'::text, 5::numeric), ('{"model": "b"}', 3)$$,
                  'a cancelled maximum: the group''s max is recomputed from its remaining events (9 -> 5)');
update meter.rollup_watermark set position_xid = '101', position_id = 0;
select pg_temp.put('tap-dm-a', 'tap.dm.tokens', 't9', '2024-03-10 10:59+00', 4, '{"model": "mini", "region": "us"}', '101');
select is((select events_folded from meter.rollup_run()), 1::bigint, 'a late event is folded');
select results_eq($$select event_count, quantity from dims where meter = 'tap.dm.tokens'
                    and hour = '2024-03-10 10:00+00' and dims = '{"model": "mini", "region": "us"}'$$,
                  $$values (2::bigint, 14::numeric)$$, '... into its group (10 + 4)');
select is_empty($$select * from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                'rollup_verify still empty after cancellations and the late event');
-- A dimension row tampered with is caught.
update meter.rollup_hourly_dims set quantity = quantity + 1
where meter_id = (select m_tokens from fx) and dims = '{"model": "mini", "region": "us"}';
select results_eq($$select hour, dimension_values_differing from meter.rollup_verify('2024-03-10 00:00+00', '2024-03-11 00:00+00')$$,
                  $$values ('2024-03-10 10:00+00'::timestamptz, 1::bigint)$$,
                  'rollup_verify names the hour whose dimension rows differ from raw events');
update meter.rollup_hourly_dims set quantity = quantity - 1
where meter_id = (select m_tokens from fx) and dims = '{"model": "mini", "region": "us"}';

-- ---------------------------------------------------------------------------------------------
-- meter.usage: group_by and filter.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select dimensions::text, quantity, event_count
      from meter.usage('tap-dm-a', 'tap.dm.tokens', '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'day', array['model'])$$,
    $$values ('{"model": "4"}'::text, 5::numeric, 2::bigint), ('{"model": "gpt-4o"}', 112, 3),
             ('{"model": "mini"}', 14, 2), ('{"model": null}', 1, 1)$$,
    'usage grouped by model over the day: 100 + 5 + 7 for gpt-4o (the cancelled 50 gone), 10 + 4 for mini');
select results_eq(
    $$select dimensions::text, quantity
      from meter.usage('tap-dm-a', 'tap.dm.tokens', '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'day', array['region'],
                       '{"model": ["gpt-4o", "mini"]}')$$,
    $$values ('{"region": "eu"}'::text, 107::numeric), ('{"region": "us"}', 14), ('{"region": null}', 5)$$,
    'filtered on model in (gpt-4o, mini), grouped by region');
select results_eq(
    $$select dimensions::text, quantity
      from meter.usage('tap-dm-a', 'tap.dm.tokens', '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'day', null,
                       '{"model": null}')$$,
    $$values ('{}'::text, 1::numeric)$$,
    'a null filter value selects the events without the property');
select throws_ok($$select * from meter.usage('tap-dm-a', 'tap.dm.tokens', '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'day', array['colour'])$$,
                 '22023', null, 'grouping by a dimension the meter does not have is refused (22023)');
select throws_ok($$select * from meter.usage('tap-dm-a', 'tap.dm.users', '2024-03-10 00:00+00', '2024-03-11 00:00+00', 'day', array['model'])$$,
                 '0A000', null, 'a unique_count meter cannot be grouped by dimension (0A000)');

select * from finish();
rollback;
