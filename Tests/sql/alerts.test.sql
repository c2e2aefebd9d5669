-- Threshold alerts and limit.reached (0018_alerts, issue 16): evaluated by meter.rollup_run in its
-- transaction for the hours it changed (meter._alerts_evaluate); messages listed by type then
-- kind (one test transaction: their created_at are equal); each fires at most once per
-- customer and period, with its webhook message: not again when a cancellation drops the figure
-- below and later events cross it again; a late event of an earlier period fires for that period.
--
-- Emulated history as in rollup_run.test.sql: each batch is stored as a long-finished transaction
-- (its own xid) just past the watermark, then rolled up.
begin;
select plan(13);
\ir support/fixtures.sql

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');

create temp table fx as
select meter.customer_upsert('tap-al-a') as cust, meter.meter_upsert('tap.al.calls', 'count') as m_calls,
       meter.plan_upsert('tap-al-plan', 'eur') as plan;
select meter.customer_subscribe('tap-al-a', 'tap-al-plan', '2024-02');
select meter.plan_price_set('tap-al-plan', 'tap.al.calls', 'per_unit', 100);
select meter.plan_limit_set('tap-al-plan', 'tap.al.calls', 10);
create temp table al as
select meter.alert_set('tap-al-a', null, 'tap.al.calls', 'quantity', 3) as q3,
       meter.alert_set(null, 'tap-al-plan', null, 'amount', 500) as amt500,
       meter.alert_set(null, 'tap-al-plan', 'tap.al.calls', 'limit_share', 0.8) as share80;
select throws_ok($$select meter.alert_set('tap-al-a', 'tap-al-plan', 'tap.al.calls', 'quantity', 3)$$, '22023', null,
                 'an alert is for a customer or a plan, not both');
select throws_ok($$select meter.alert_set('tap-al-a', null, 'tap.al.calls', 'amount', 3)$$, '22023', null,
                 'an amount alert has no meter');

-- n calls of March as one batch (xid x), rolled up.
create function pg_temp.calls(p_from int, p_to int, p_xid xid8, p_day text default '2024-03-10') returns void language sql as $$
    update meter.rollup_watermark set position_xid = p_xid, position_id = 0;
    select pg_temp.put('tap-al-a', 'tap.al.calls', 'c' || g || '-' || p_day, (p_day || ' 10:00+00')::timestamptz, 1, '{}', p_xid)
    from generate_series(p_from, p_to) g;
    select meter.rollup_run();
$$;
create temp view fired as
select coalesce(string_agg(m.type || ' ' || coalesce(m.payload ->> 'kind', '') || ' ' || (m.payload ->> 'period'), ', '
                           order by m.type, m.payload ->> 'kind'), '') as f
from meter.webhook_messages m where m.type in ('alert.triggered', 'limit.reached');

select pg_temp.calls(1, 2, '100');
select is((select f from fired), '', '2 calls: nothing reached');
select pg_temp.calls(3, 3, '110');
select is((select f from fired), 'alert.triggered quantity 2024-03', '3 calls: the quantity alert fires');
select pg_temp.calls(4, 5, '120');
select is((select f from fired), 'alert.triggered amount 2024-03, alert.triggered quantity 2024-03',
          '5 calls = 500: the plan''s amount alert fires; the quantity alert does not fire again');
-- Drop below 3 (cancel 3), then cross again (2 more: 4): nothing fires again.
select ok((select count(*) = 3 from meter.event_cancel(
    '[{"customer":"tap-al-a","idempotency_key":"c1-2024-03-10"},{"customer":"tap-al-a","idempotency_key":"c2-2024-03-10"},
      {"customer":"tap-al-a","idempotency_key":"c3-2024-03-10"}]') where status = 'cancelled'), 'setup: three calls cancelled');
select meter.rollup_run();
select is((select quantity from meter._period_usage((select cust from fx), (select m_calls from fx), '2024-03-01', '2024-04-01')),
          2::numeric, 'the quantity dropped to 2, below the threshold');
select pg_temp.calls(6, 7, '130');
select is((select count(*) from meter.alert_firings), 2::bigint,
          'back to 4: the quantity alert does not fire a second time in the period (once per period)');
select pg_temp.calls(8, 11, '140');
select is((select f from fired),
          'alert.triggered amount 2024-03, alert.triggered limit_share 2024-03, alert.triggered quantity 2024-03',
          '8 calls: 80 % of the limit of 10 fires');
select pg_temp.calls(12, 13, '150');
select is((select f from fired),
          'alert.triggered amount 2024-03, alert.triggered limit_share 2024-03, alert.triggered quantity 2024-03, limit.reached  2024-03',
          '10 calls: limit.reached');
-- A late batch of February: the alerts fire for February, once.
select pg_temp.calls(1, 3, '160', '2024-02-10');
select is((select count(*) from meter.alert_firings where period = '2024-02'), 1::bigint,
          'three February calls, late: the quantity alert fires for 2024-02');
select results_eq($$select payload ->> 'customer', payload ->> 'value', payload ->> 'threshold' from meter.webhook_messages
                    where type = 'alert.triggered' and payload ->> 'period' = '2024-02'$$,
                  $$values ('tap-al-a'::text, '3'::text, '3'::text)$$, 'the message says who, what and how much');

select * from finish();
rollback;
