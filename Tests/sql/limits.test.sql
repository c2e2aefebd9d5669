-- Usage limits (0016_usage_limits, issue 16): meter.plan_limit_set validates and normalises;
-- meter.limit_check gives, per limit of the customer's plan on a meter in the open period, the
-- usage from the rollups plus what is committed but not rolled up yet (events past the watermark,
-- cancellations of rolled-up events not subtracted yet), what remains, whether it applies to the
-- next event's dimension values and whether `quantity` more is allowed. Figures by hand.
--
-- Emulated history as in rollup_run.test.sql: rolled-up events of xid 100; then the watermark is
-- put at xid 200 and events of xid 200 wait past it, as committed events the rollup has not
-- reached yet.
begin;
select plan(15);
\ir support/fixtures.sql

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-lm-a') as cust,
       meter.customer_upsert('tap-lm-none') as nobody,
       meter.meter_upsert('tap.lm.calls', 'count') as m_calls,
       meter.meter_upsert('tap.lm.tokens', 'sum', null, null, null, null, array['model']) as m_tokens,
       meter.meter_upsert('tap.lm.peak', 'max') as m_peak,
       meter.meter_upsert('tap.lm.users', 'unique_count', 'user') as m_users,
       meter.plan_upsert('tap-lm-plan', 'eur') as plan,
       pg_catalog.date_trunc('month', pg_catalog.now(), 'UTC') as t0;
select meter.customer_subscribe('tap-lm-a', 'tap-lm-plan', pg_catalog.to_char(pg_catalog.now() at time zone 'UTC', 'YYYY-MM'));

-- plan_limit_set
select is(meter.plan_limit_set('tap-lm-plan', 'tap.lm.tokens', 40, '{"model": "big"}'), '{"model": ["big"]}'::jsonb,
          'a limit on a filter is stored normalised (the stored filter is returned)');
select meter.plan_limit_set('tap-lm-plan', 'tap.lm.tokens', 100);
select meter.plan_limit_set('tap-lm-plan', 'tap.lm.calls', 5);
select meter.plan_limit_set('tap-lm-plan', 'tap.lm.peak', 10);
select meter.plan_limit_set('tap-lm-plan', 'tap.lm.peak', 99, '{}');
select results_eq($$select m.code, l.filter::text, l.quantity from meter.plan_limits l join meter.meters m on m.id = l.meter_id
                    order by m.code, l.filter::text collate "C"$$,
                  $$values ('tap.lm.calls'::text, '{}'::text, 5::numeric), ('tap.lm.peak', '{}', 99),
                           ('tap.lm.tokens', '{"model": ["big"]}', 40), ('tap.lm.tokens', '{}', 100)$$,
                  'limits per (plan, meter, filter); setting one again replaces it');
select meter.plan_limit_set('tap-lm-plan', 'tap.lm.peak', 10);
select throws_ok($$select meter.plan_limit_set('tap-lm-plan', 'tap.lm.calls', 0)$$, '22023', null, 'a limit must be positive (22023)');
select throws_ok($$select meter.plan_limit_set('tap-lm-plan', 'tap.lm.calls', 'NaN')$$, '22023', null, 'NaN is no limit (22023)');
select throws_ok($$select meter.plan_limit_set('tap-lm-plan', 'tap.lm.users', 5)$$, '0A000', null,
                 'a distinct count has no per-event increment to check: no limit (0A000)');
select throws_ok($$select meter.plan_limit_set('tap-lm-plan', 'tap.lm.calls', 5, '{"model": "x"}')$$, '22023', null,
                 'a filter on a dimension the meter does not have (22023)');

-- Rolled up: calls 2; tokens big 30 (b1), small 20; peak 4, 7.
select pg_temp.put('tap-lm-a', 'tap.lm.calls', 'c1', (select t0 from fx));
select pg_temp.put('tap-lm-a', 'tap.lm.calls', 'c2', (select t0 from fx));
select pg_temp.put('tap-lm-a', 'tap.lm.tokens', 'b1', (select t0 from fx), 30, '{"model": "big"}');
select pg_temp.put('tap-lm-a', 'tap.lm.tokens', 's1', (select t0 from fx), 20, '{"model": "small"}');
select pg_temp.put('tap-lm-a', 'tap.lm.peak', 'p1', (select t0 from fx), 4);
select pg_temp.put('tap-lm-a', 'tap.lm.peak', 'p2', (select t0 from fx), 7);
select is((select events_folded from meter.rollup_run()), 6::bigint, 'setup: six events rolled up');
-- Committed, not rolled up: a call, 5 big tokens, a peak of 12.
update meter.rollup_watermark set position_xid = '200', position_id = 0;
select pg_temp.put('tap-lm-a', 'tap.lm.calls', 'c3', (select t0 from fx), 1, '{}', '200');
select pg_temp.put('tap-lm-a', 'tap.lm.tokens', 'b2', (select t0 from fx), 5, '{"model": "big"}', '200');
select pg_temp.put('tap-lm-a', 'tap.lm.peak', 'p3', (select t0 from fx), 12, '{}', '200');

select results_eq(
    $$select filter::text, limit_quantity, used, remaining, applies, allowed from meter.limit_check('tap-lm-a', 'tap.lm.calls')$$,
    $$values ('{}'::text, 5::numeric, 3::numeric, 2::numeric, true, true)$$,
    'calls: 2 rolled up + 1 not yet = 3 of 5; one more is allowed');
select results_eq($$select allowed from meter.limit_check('tap-lm-a', 'tap.lm.calls', null, 3)$$, $$values (false)$$,
                  '... three more would make 6 > 5: not allowed');
select results_eq(
    $$select filter::text, used, remaining, applies, allowed from meter.limit_check('tap-lm-a', 'tap.lm.tokens', '{"model": "small"}', 10)$$,
    $$values ('{}'::text, 55::numeric, 45::numeric, true, true), ('{"model": ["big"]}', 35, 5, false, false)$$,
    'tokens: the whole meter 30 + 20 + 5 = 55 of 100; big 30 + 5 = 35 of 40, which does not apply to a small-model call '
    '(and 10 more would exceed it)');
select results_eq(
    $$select used, remaining, allowed from meter.limit_check('tap-lm-a', 'tap.lm.peak', null, 9)$$,
    $$values (12::numeric, 0::numeric, true)$$,
    'peak: the largest value, 12 not yet rolled up, over the limit of 10; a next value of 9 is allowed');

-- A cancellation of a rolled-up event counts before the rollup subtracts it.
select ok((select status from meter.event_cancel('[{"customer": "tap-lm-a", "idempotency_key": "b1"}]')) = 'cancelled',
          'setup: b1 (30 big tokens, rolled up) cancelled');
select results_eq(
    $$select filter::text, used from meter.limit_check('tap-lm-a', 'tap.lm.tokens') order by filter::text collate "C"$$,
    $$values ('{"model": ["big"]}'::text, 5::numeric), ('{}', 25::numeric)$$,
    'the cancellation is counted at once: big 35 - 30 = 5, the meter 55 - 30 = 25');

select throws_ok($$select * from meter.limit_check('tap-lm-none', 'tap.lm.calls')$$, 'P0002', null, 'a customer without a plan: P0002');

select * from finish();
rollback;
