-- Prices per filter of a meter's dimensions (0015_price_filters, issue 15, decision 110): a plan
-- prices the usage whose dimension values fall under a filter ({dimension: value or [values]},
-- "none" = null), with a default ('{}') for the rest. meter.plan_price_set validates, normalises
-- and refuses overlapping filters; meter.period_close writes one usage line per price (quantity
-- from rollup_hourly_dims through meter._line_usage, amount by price_amount, events hash over the
-- line's events), and adjustments per line; meter.reconciliation has one row per line, raw events
-- assigned to lines by the same rule. Expected amounts are written out by hand below.
--
-- Emulated history as in month_close.test.sql: events of long-finished transactions (xid 100,
-- then 200 for the late ones); the suite runs on a freshly migrated database.
begin;
select plan(45);
\ir support/fixtures.sql
\ir support/close_reference.sql
-- An event as a long-finished transaction stored it three hours ago (before the close, which is
-- taken to have happened two hours ago).
create function pg_temp.put_early(p_customer text, p_meter text, p_key text, p_occurred_at timestamptz,
                                  p_value numeric default 1, p_properties jsonb default '{}')
returns bigint language sql
as $$ select pg_temp.put(p_customer, p_meter, p_key, p_occurred_at, p_value, p_properties, '100',
                         pg_catalog.now() - interval '3 hours') $$;
-- The hex SHA-256 of a text, for hashes written out.
create function pg_temp.sha(p_text text) returns text language sql
as $$ select encode(sha256(convert_to(p_text, 'UTF8')), 'hex') $$;

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-pf-a') as cust,
       meter.meter_upsert('tap.pf.tokens', 'sum', null, null, null, null, array['model', 'region']) as m_tokens,
       meter.meter_upsert('tap.pf.peak', 'max', null, null, null, null, array['model']) as m_peak,
       meter.meter_upsert('tap.pf.users', 'unique_count', 'user', null, null, null, array['model']) as m_users,
       meter.meter_upsert('tap.pf.synced', 'sum', null, null, null, null, array['model']) as m_synced,
       meter.meter_upsert('tap.pf.calls', 'count') as m_calls,
       meter.plan_upsert('tap-pf-plan', 'usd') as plan;
select meter.customer_subscribe('tap-pf-a', 'tap-pf-plan', '2024-03');

-- ---------------------------------------------------------------------------------------------
-- plan_price_set: filters validated, normalised, never overlapping.
-- ---------------------------------------------------------------------------------------------
select lives_ok(
    $$select meter.plan_price_set('tap-pf-plan', 'tap.pf.tokens', 'graduated', null, null,
          '[{"up_to": 100, "unit_amount": 2}, {"up_to": null, "unit_amount": 1}]', '{"model": "gpt-4o"}')$$,
    'a graduated price for model gpt-4o');
select lives_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.tokens', 'per_unit', 0.5, null, null,
                                             '{"model": ["nano", "mini", "nano"]}')$$,
                'a per-unit price for models mini and nano');
select lives_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.tokens', 'per_unit', 0.1)$$,
                'a default price for the rest of the meter');
select lives_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.peak', 'per_unit', 10, null, null, '{"model": "a"}')$$,
                'a max meter priced for model a only (no default: the rest is not billed)');
select lives_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.calls', 'per_unit', 3)$$,
                'a meter without dimensions priced as before');
select results_eq(
    $$select m.code, pp.filter::text, pp.model from meter.plan_prices pp join meter.meters m on m.id = pp.meter_id
      where pp.plan_id = (select plan from fx) order by m.code, pp.filter::text collate "C"$$,
    $$values ('tap.pf.calls'::text, '{}'::text, 'per_unit'::text), ('tap.pf.peak', '{"model": ["a"]}', 'per_unit'),
             ('tap.pf.tokens', '{"model": ["gpt-4o"]}', 'graduated'),
             ('tap.pf.tokens', '{"model": ["mini", "nano"]}', 'per_unit'), ('tap.pf.tokens', '{}', 'per_unit')$$,
    'filters are stored with each value as a sorted array of distinct values; the default is {}');
select throws_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.tokens', 'per_unit', 1, null, null,
                                              '{"model": "gpt-4o", "region": "eu"}')$$,
                 '22023', null, 'a filter inside another (model gpt-4o in eu) overlaps it: refused (22023)');
select throws_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.tokens', 'per_unit', 1, null, null, '{"region": "eu"}')$$,
                 '22023', null, 'a filter on another dimension overlaps (gpt-4o in eu would have two prices): refused');
select throws_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.tokens', 'per_unit', 1, null, null, '{"model": ["mini", "x"]}')$$,
                 '22023', null, 'a filter sharing one value (mini) overlaps: refused');
select throws_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.tokens', 'per_unit', 1, null, null, '{"tier": "x"}')$$,
                 '22023', null, 'a filter on a property that is not a dimension of the meter is refused (22023)');
select throws_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.tokens', 'per_unit', 1, null, null, '{"model": 4}')$$,
                 '22023', null, 'filter values are strings or null (22023)');
select throws_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.tokens', 'per_unit', 1, null, null, '{"model": []}')$$,
                 '22023', null, 'an empty list of values is refused (22023)');
select throws_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.users', 'per_unit', 1, null, null, '{"model": "a"}')$$,
                 '0A000', null, 'a distinct-count meter cannot be priced per filter (0A000)');
select meter.plan_price_set('tap-pf-plan', 'tap.pf.synced', 'per_unit', 1);
select meter.billing_price_set('tap.pf.synced', 'price_tap_pf', null);
select throws_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.synced', 'per_unit', 1, null, null, '{"model": "a"}')$$,
                 '0A000', null, 'a meter billed through usage records cannot be priced per filter (0A000)');
select throws_ok($$select meter.billing_price_set('tap.pf.tokens', 'price_tap_pf2', null)$$,
                 '0A000', null, 'nor can a meter priced per filter be billed through usage records (0A000)');
-- The tokens meter goes to the engine through Billing Meters: each filter to an engine meter and
-- price of its own (mirrored), each a subscription item of the customer.
select meter.billing_price_set('tap.pf.tokens', 'price_tap_pf_tokens', null, 'tap.pf.tokens');
select meter.plan_price_mirror_record('tap-pf-plan', 'tap.pf.tokens', 'price_pf_g', '{"model": ["gpt-4o"]}');
select meter.plan_price_mirror_record('tap-pf-plan', 'tap.pf.tokens', 'price_pf_mn', '{"model": ["mini", "nano"]}');
select meter.plan_price_mirror_record('tap-pf-plan', 'tap.pf.tokens', 'price_pf_o', '{}');

-- ---------------------------------------------------------------------------------------------
-- March: events, one duplicate's redelivery, a cancellation; close.
-- gpt-4o: 100 (eu) + 50 (us) = 150 -> graduated 100 x 2 + 50 x 1 = 250; g-x (gpt-4o, 40) cancelled.
-- mini|nano: 30 + 20 = 50 -> 50 x 0.5 = 25. The rest: no model 7, model "other" 3 -> 10 x 0.1 = 1.
-- peak: model a max 9 -> 9 x 10 = 90 (model b's 12 is not billed). calls: 2 -> 6.
-- ---------------------------------------------------------------------------------------------
select pg_temp.put_early('tap-pf-a', 'tap.pf.tokens', 'g-1', '2024-03-10 10:05+00', 100, '{"model": "gpt-4o", "region": "eu"}');
select pg_temp.put_early('tap-pf-a', 'tap.pf.tokens', 'g-2', '2024-03-11 10:05+00', 50, '{"model": "gpt-4o", "region": "us"}');
select pg_temp.put_early('tap-pf-a', 'tap.pf.tokens', 'g-x', '2024-03-12 10:05+00', 40, '{"model": "gpt-4o"}');
select pg_temp.put_early('tap-pf-a', 'tap.pf.tokens', 'm-1', '2024-03-10 11:05+00', 30, '{"model": "mini"}');
select pg_temp.put_early('tap-pf-a', 'tap.pf.tokens', 'n-1', '2024-03-10 11:15+00', 20, '{"model": "nano", "region": "eu"}');
select pg_temp.put_early('tap-pf-a', 'tap.pf.tokens', 'o-1', '2024-03-10 12:05+00', 7, '{"region": "eu"}');
select pg_temp.put_early('tap-pf-a', 'tap.pf.tokens', 'o-2', '2024-03-31 23:59+00', 3, '{"model": "other"}');
select pg_temp.put_early('tap-pf-a', 'tap.pf.peak', 'p-1', '2024-03-10 10:05+00', 5, '{"model": "a"}');
select pg_temp.put_early('tap-pf-a', 'tap.pf.peak', 'p-2', '2024-03-20 10:05+00', 9, '{"model": "a"}');
select pg_temp.put_early('tap-pf-a', 'tap.pf.peak', 'p-3', '2024-03-21 10:05+00', 12, '{"model": "b"}');
select pg_temp.put_early('tap-pf-a', 'tap.pf.calls', 'c-1', '2024-03-10 10:05+00');
select pg_temp.put_early('tap-pf-a', 'tap.pf.calls', 'c-2', '2024-03-10 10:06+00');
-- (recorded by a long-finished transaction too, with its event's time, as ingest records it: the
-- rollup counts it in its ledger, which the reconciliation reads)
insert into meter.event_redeliveries (event_id, verdict, occurred_at, xid, customer_id)
select e.id, 'duplicate', e.occurred_at, '100', e.customer_id from meter.events e where e.idempotency_key = 'g-1';
select results_eq($$select status from meter.event_cancel('[{"customer": "tap-pf-a", "idempotency_key": "g-x"}]')$$,
                  $$values ('cancelled'::text)$$, 'setup: g-x is cancelled');
update meter.event_cancellations set cancelled_at = pg_catalog.now() - interval '3 hours';
select results_eq($$select events_folded, cancellations_folded from meter.rollup_run()$$,
                  $$values (12::bigint, 1::bigint)$$, 'setup: the 12 events and the cancellation are rolled up');

-- ---------------------------------------------------------------------------------------------
-- Sync per filter: one subscription item per priced filter; each claimed hour carries one
-- figure per filter (the default first, then the filters in order).
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select meter_code, price_filter::text, price_id from meter.billing_unlinked() where customer_external_id = 'tap-pf-a'
      order by price_filter::text collate "C"$$,
    $$values ('tap.pf.tokens'::text, '{"model": ["gpt-4o"]}'::text, 'price_pf_g'::text),
             ('tap.pf.tokens', '{"model": ["mini", "nano"]}', 'price_pf_mn'), ('tap.pf.tokens', '{}', 'price_pf_o')$$,
    'billing_unlinked: one line to link per priced filter, with the mirror of that price');
select meter.billing_link_record((select cust from fx), (select m_tokens from fx), 'cus_tap_pf', 'sub_tap_pf', 'si_tap_pf_' || n, p, f::jsonb)
from (values (1, 'price_pf_g', '{"model": ["gpt-4o"]}'), (2, 'price_pf_mn', '{"model": ["mini", "nano"]}'), (3, 'price_pf_o', '{}')) v(n, p, f);
select is_empty($$select 1 from meter.billing_unlinked() where customer_external_id = 'tap-pf-a'$$,
                'once each line is linked, nothing is left to link');
create temp table claimed as select * from meter.sync_claim('tap-pf-worker');
select results_eq(
    $$select hour, quantity::numeric,
             (select string_agg((x ->> 'filter') || '=' || (x ->> 'quantity'), ' ' order by o)
              from jsonb_array_elements(lines) with ordinality as a(x, o))
      from claimed order by hour$$,
    $$values ('2024-03-10 10:00+00'::timestamptz, 100::numeric, '{}=0 {"model": ["gpt-4o"]}=100 {"model": ["mini", "nano"]}=0'::text),
             ('2024-03-10 11:00+00', 50, '{}=0 {"model": ["gpt-4o"]}=0 {"model": ["mini", "nano"]}=50'),
             ('2024-03-10 12:00+00', 7, '{}=7 {"model": ["gpt-4o"]}=0 {"model": ["mini", "nano"]}=0'),
             ('2024-03-11 10:00+00', 50, '{}=0 {"model": ["gpt-4o"]}=50 {"model": ["mini", "nano"]}=0'),
             ('2024-03-12 10:00+00', 0, '{}=0 {"model": ["gpt-4o"]}=0 {"model": ["mini", "nano"]}=0'),
             ('2024-03-31 23:00+00', 3, '{}=3 {"model": ["gpt-4o"]}=0 {"model": ["mini", "nano"]}=0')$$,
    'each hour sends every line''s part (zeros included, so a cancelled hour overwrites the engine''s figure)');
select results_eq(
    $$select distinct x ->> 'filter', x ->> 'suffix' ~ '^\.f[0-9a-f]{12}$' or (x ->> 'suffix' = '' and x -> 'filter' = '{}')
      from claimed, jsonb_array_elements(lines) x order by 1$$,
    $$values ('{"model": ["gpt-4o"]}'::text, true), ('{"model": ["mini", "nano"]}', true), ('{}', true)$$,
    'a filter''s engine names get ".f" and 12 hex digits; the default keeps the meter''s own');
select is((select count(distinct x ->> 'suffix') from claimed, jsonb_array_elements(lines) x), 3::bigint,
          'three lines, three engine names');
select is((select count(*) from claimed c where meter.sync_succeeded(c.customer_id, c.meter_id, c.hour, c.claim_token) = 'synced'),
          6::bigint, 'the engine acknowledges the six hours');

select pg_temp.ref_expect('2024-03', 'tap-pf-a');
select results_eq(
    $$select outcome, lines, total from meter.period_close('2024-03', 'tap-pf-a')$$,
    $$values ('closed'::text, 6, 372::bigint)$$,
    'the March close: 6 lines, 6 + 90 + 250 + 25 + 1 + 0 (synced meter, no events) = 372');
select is_empty($$select * from pg_temp.ref_differences(pg_temp.invoices_of('tap-pf-a', '2024-03'))$$,
                'prices per filter, 2024-03: the set-based close wrote exactly the lines of the per-customer pricing (support/close_reference.sql)');
create temp view lines as
select l.line_no, l.kind, m.code as meter, l.price_filter::text as filter, l.event_count, l.quantity, l.amount,
       l.events_hash, l.description, l.adjusts_period, i.period
from meter.invoice_lines l join meter.invoices i on i.id = l.invoice_id join meter.meters m on m.id = l.meter_id
where i.customer_id = (select cust from fx);
select results_eq(
    $$select line_no, meter, filter, event_count, quantity, amount, description from lines where period = '2024-03' order by line_no$$,
    $$values (1, 'tap.pf.calls'::text, '{}'::text, 2::bigint, 2::numeric, 6::bigint, 'tap.pf.calls: 2 (count, per_unit)'::text),
             (2, 'tap.pf.peak', '{"model": ["a"]}', 2, 9, 90, 'tap.pf.peak [model=a]: 9 (max, per_unit)'),
             (3, 'tap.pf.synced', '{}', 0, 0, 0, 'tap.pf.synced: 0 (sum, per_unit)'),
             (4, 'tap.pf.tokens', '{"model": ["gpt-4o"]}', 2, 150, 250, 'tap.pf.tokens [model=gpt-4o]: 150 (sum, graduated)'),
             (5, 'tap.pf.tokens', '{"model": ["mini", "nano"]}', 2, 50, 25, 'tap.pf.tokens [model=mini|nano]: 50 (sum, per_unit)'),
             (6, 'tap.pf.tokens', '{}', 2, 10, 1, 'tap.pf.tokens [other]: 10 (sum, per_unit)')$$,
    'one usage line per price: per filter, then the default; event counts, quantities and amounts as computed by hand');
select results_eq(
    $$select filter, events_hash from lines where period = '2024-03' and meter = 'tap.pf.tokens' order by line_no$$,
    $$values ('{"model": ["gpt-4o"]}'::text, pg_temp.sha(E'g-1\t100\ng-2\t50')), ('{"model": ["mini", "nano"]}', pg_temp.sha(E'm-1\t30\nn-1\t20')),
             ('{}', pg_temp.sha(E'o-1\t7\no-2\t3'))$$,
    'each line hashes exactly its own events (sorted "key<TAB>value"; the cancelled g-x in none)');
select results_eq(
    $$select r.price_filter::text, r.raw_events, r.raw_quantity::numeric, r.duplicates_rejected, r.cancelled_events,
             r.rollup_quantity::numeric, r.invoiced_amount::bigint, r.expected_amount::bigint
      from meter.reconciliation r where r.customer = 'tap-pf-a' and r.meter = 'tap.pf.tokens' order by r.price_filter::text collate "C"$$,
    $$values ('{"model": ["gpt-4o"]}'::text, 2::bigint, 150::numeric, 1::bigint, 1::bigint, 150::numeric, 250::bigint, 250::bigint),
             ('{"model": ["mini", "nano"]}', 2, 50, 0, 0, 50, 25, 25),
             ('{}', 2, 10, 0, 0, 10, 1, 1)$$,
    'the reconciliation has a row per line: raw events, duplicates and cancellations of that line only');
select results_eq(
    $$select r.price_filter::text, r.acknowledged_quantity::numeric, r.status from meter.reconciliation r
      where r.customer = 'tap-pf-a' and r.meter = 'tap.pf.tokens' order by r.price_filter::text collate "C"$$,
    $$values ('{"model": ["gpt-4o"]}'::text, 150::numeric, 'MISMATCH: engine usage not fetched'::text),
             ('{"model": ["mini", "nano"]}', 50, 'MISMATCH: engine usage not fetched'),
             ('{}', 10, 'MISMATCH: engine usage not fetched')$$,
    'what the engine acknowledged is per line (each line''s part of the hours); its own figure is not fetched yet');
select results_eq(
    $$select price_filter::text, event_name, subscription_item_id from meter.billing_usage_targets('2024-03')
      where customer = 'tap-pf-a' order by price_filter::text collate "C"$$,
    $$values ('{"model": ["gpt-4o"]}'::text, 'tap.pf.tokens' || meter._line_suffix('{"model": ["gpt-4o"]}'), 'si_tap_pf_1'::text),
             ('{"model": ["mini", "nano"]}', 'tap.pf.tokens' || meter._line_suffix('{"model": ["mini", "nano"]}'), 'si_tap_pf_2'),
             ('{}', 'tap.pf.tokens', 'si_tap_pf_3')$$,
    'billing_usage_targets: the engine meter of each line to ask');
select meter.billing_usage_record((select cust from fx), (select m_tokens from fx), '2024-03-01', '2024-04-01', 'meter_events', 'mtr_pf',
                                  q, 0, f::jsonb)
from (values (150, '{"model": ["gpt-4o"]}'), (50, '{"model": ["mini", "nano"]}'), (10, '{}')) v(q, f);
select is_empty($$select 1 from meter.reconciliation where customer = 'tap-pf-a' and status <> 'MATCH'$$,
                'with the engine''s figure of each line recorded, every line of the March invoice MATCHes');
select is_empty($$select * from meter.rollup_verify('2024-03-01', '2024-04-01')$$, 'rollup_verify: nothing differs');

-- ---------------------------------------------------------------------------------------------
-- Prices of an invoiced plan stay as they are.
-- ---------------------------------------------------------------------------------------------
select throws_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.tokens', 'per_unit', 1, null, null, '{"model": "big"}')$$,
                 '55000', null, 'a new filter on an invoiced meter would re-divide its closed periods: refused (55000)');
select throws_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.tokens', 'per_unit', 0.6, null, null, '{"model": ["mini", "nano"]}')$$,
                 '55000', null, 'an invoiced filter''s price cannot change (55000)');
select lives_ok($$select meter.plan_price_set('tap-pf-plan', 'tap.pf.tokens', 'per_unit', 0.5, null, null, '{"model": ["nano", "mini"]}')$$,
                'the very same price again (values in another order) is accepted');

-- ---------------------------------------------------------------------------------------------
-- After the close (taken to be two hours ago): a late gpt-4o event of March (+60 -> 210:
-- 100 x 2 + 110 x 1 = 310, so +60) and the cancellation of m-1 (-30 -> 20: 10, so -15).
-- ---------------------------------------------------------------------------------------------
update meter.invoices set closed_at = pg_catalog.now() - interval '2 hours' where customer_id = (select cust from fx);
update meter.rollup_watermark set position_xid = '200', position_id = 0;
select pg_temp.put('tap-pf-a', 'tap.pf.tokens', 'g-late', '2024-03-30 10:05+00', 60, '{"model": "gpt-4o"}', '200',
                   pg_catalog.now() - interval '1 hour');
select results_eq($$select status from meter.event_cancel('[{"customer": "tap-pf-a", "idempotency_key": "m-1"}]')$$,
                  $$values ('cancelled'::text)$$, 'setup: m-1 is cancelled after the close');
update meter.event_cancellations set cancelled_at = pg_catalog.now() - interval '1 hour'
where event_id = (select id from meter.events where idempotency_key = 'm-1');
select results_eq($$select events_folded, cancellations_folded from meter.rollup_run()$$,
                  $$values (1::bigint, 1::bigint)$$, 'setup: the late event and the cancellation are rolled up');
select results_eq(
    $$select r.price_filter::text, r.late_after_close, r.status from meter.reconciliation r
      where r.customer = 'tap-pf-a' and r.meter = 'tap.pf.tokens' order by r.price_filter::text collate "C"$$,
    $$values ('{"model": ["gpt-4o"]}'::text, 1::bigint, 'MISMATCH: late-after-close not adjusted yet'::text),
             ('{"model": ["mini", "nano"]}', 1, 'MISMATCH: late-after-close not adjusted yet'),
             ('{}', 0, 'MISMATCH: unsynced hours')$$,
    'each late change is counted on its own line only (the changed hours are the meter''s: unsynced for every line)');
select is((select count(*) from meter.sync_claim('tap-pf-worker')), 0::bigint,
          'the changed hours of the closed March are not sent: the next invoice adjusts them');
select pg_temp.ref_expect('2024-04', 'tap-pf-a');
select results_eq(
    $$select outcome, total from meter.period_close('2024-04', 'tap-pf-a')$$,
    $$values ('closed'::text, 45::bigint)$$,
    'April: no usage, two adjustments: +60 and -15 = 45');
select is_empty($$select * from pg_temp.ref_differences(pg_temp.invoices_of('tap-pf-a', '2024-04'))$$,
                'prices per filter, 2024-04 with adjustments: the set-based close wrote exactly the lines of the per-customer pricing (support/close_reference.sql)');
select results_eq(
    $$select kind, meter, filter, adjusts_period, event_count, quantity, amount, description from lines
      where period = '2024-04' and kind = 'adjustment' order by line_no$$,
    $$values ('adjustment'::text, 'tap.pf.tokens'::text, '{"model": ["gpt-4o"]}'::text, '2024-03'::text, 1::bigint, 60::numeric, 60::bigint,
              'tap.pf.tokens [model=gpt-4o]: adjustment for 2024-03 (events or cancellations after its close): 150 -> 210'::text),
             ('adjustment', 'tap.pf.tokens', '{"model": ["mini", "nano"]}', '2024-03', -1, -30, -15,
              'tap.pf.tokens [model=mini|nano]: adjustment for 2024-03 (events or cancellations after its close): 50 -> 20')$$,
    'an adjustment per changed line, re-priced with that line''s price (graduated: +60 at the second tier)');
select is_empty($$select period, meter, price_filter, status from meter.reconciliation where customer = 'tap-pf-a' and status <> 'MATCH'$$,
                'after the adjustments every line MATCHes again');
select is(meter._filter_label('{"model": [null, "a"], "region": ["eu"]}', true), ' [model=(none)|a, region=eu]',
          'a line names a "none" value (JSON null) as (none)');

select * from finish();
rollback;
