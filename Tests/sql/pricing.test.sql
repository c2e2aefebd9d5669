-- Pricing (0004_month_close): meter.price_amount, THE rounding rule (exact numeric, rounded once per
-- line, half away from zero) for the four models; meter.plan_upsert (a plan's currency is fixed);
-- meter.plan_price_set (validated so that a close never meets a malformed price; a set replaces the
-- meter's price in the plan, until the plan has invoiced the meter); meter.customer_subscribe
-- (plans change from an open period only).
begin;
select plan(97);

-- Tiers used below (amounts in minor units):
--   graduated/volume T:  1..100 at 2; 101..1000 at 1 (+500 flat); above 1000 at 0.5 (+1000 flat)
--   T_small:             1..1e6 at 0.001; above at 0.00000001 (+7 flat)
--   T_flat:              up to 10: 300 flat, nothing per unit; above 10 at 5 per unit
create temp table t (name text primary key, tiers jsonb not null);
insert into t values
    ('T', '[{"up_to": 100, "unit_amount": 2},
            {"up_to": 1000, "unit_amount": 1, "flat_amount": 500},
            {"up_to": null, "unit_amount": 0.5, "flat_amount": 1000}]'),
    ('T_small', '[{"up_to": 1000000, "unit_amount": 0.001},
                  {"up_to": null, "unit_amount": 0.00000001, "flat_amount": 7}]'),
    ('T_flat', '[{"up_to": 10, "unit_amount": 0, "flat_amount": 300},
                 {"up_to": null, "unit_amount": 5}]');

create function pg_temp.amt(p_model text, p_tiers text, p_q numeric) returns bigint language sql
as $$ select meter.price_amount(p_model, null, null, (select tiers from t where name = p_tiers), p_q) $$;

-- ---------------------------------------------------------------------------------------------
-- price_amount: per_unit.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select q, meter.price_amount('per_unit', 0.5, null, null, q)
      from (values (1::numeric), (3), (5), (2), (4)) v(q) order by q$$,
    $$values (1::numeric, 1::bigint), (2, 1), (3, 2), (4, 2), (5, 3)$$,
    'per_unit at 0.5: 0.5 -> 1, 1 -> 1, 1.5 -> 2, 2 -> 2, 2.5 -> 3 (half away from zero, not to even)');
select is(meter.price_amount('per_unit', 1.4999, null, null, 1), 1::bigint, 'per_unit: 1.4999 rounds down to 1');
select is(meter.price_amount('per_unit', 1.5, null, null, 1), 2::bigint, 'per_unit: 1.5 rounds up to 2');
select is(meter.price_amount('per_unit', 0.05, null, null, 29), 1::bigint,
          'per_unit at 0.05 (a twentieth of a minor unit): 29 units = 1.45 -> 1');
select is(meter.price_amount('per_unit', 0.05, null, null, 30), 2::bigint, '30 units = 1.5 -> 2');
select is(meter.price_amount('per_unit', 1, null, null, 2.5), 3::bigint,
          'per_unit: a fractional quantity (2.5 units at 1) -> 3');
select is(meter.price_amount('per_unit', 3, null, null, 0.000001), 0::bigint,
          'per_unit: 0.000001 units at 3 = 0.000003 -> 0');
select is(meter.price_amount('per_unit', 1000000, null, null, 0.0000005), 1::bigint,
          'per_unit: 0.0000005 units at 1,000,000 = 0.5 -> 1 (computed exactly, no floating point)');
select is(meter.price_amount('per_unit', 0.00000001, null, null, 1e20), 1000000000000::bigint,
          'per_unit: 1e20 units at 0.00000001 = 1e12, exactly');
select is(meter.price_amount('per_unit', 0.1, null, null, 33333333333.35), 3333333333::bigint,
          'per_unit: 33,333,333,333.35 units at 0.1 = 3,333,333,333.335 -> 3,333,333,333');
select is(meter.price_amount('per_unit', 7, null, null, 0), 0::bigint, 'per_unit: zero units cost nothing');
select is(meter.price_amount('per_unit', 7, null, null, null), 0::bigint, 'per_unit: no quantity (null) costs nothing');
select throws_ok($$select meter.price_amount('per_unit', 1, null, null, 1e20)$$, '22003', null,
                 'per_unit: an amount beyond bigint (1e20 at 1) is an error, never wrapped or truncated');

-- ---------------------------------------------------------------------------------------------
-- price_amount: package (blocks of package_size, rounded up).
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select q, meter.price_amount('package', 25, 10, null, q)
      from (values (10::numeric), (11), (0), (0.000001), (20), (9.999999), (20.000001)) v(q) order by q$$,
    $$values (0::numeric, 0::bigint), (0.000001, 25), (9.999999, 25), (10, 25), (11, 50), (20, 50), (20.000001, 75)$$,
    'package of 10 at 25: zero costs nothing, any fraction of a block is a block, an exact multiple '
    'is that many blocks, one over starts the next block');
select results_eq(
    $$select q, meter.price_amount('package', 0.5, 3, null, q) from (values (3::numeric), (9), (15)) v(q) order by q$$,
    $$values (3::numeric, 1::bigint), (9, 2), (15, 3)$$,
    'package of 3 at 0.5: 1 block = 0.5 -> 1, 3 blocks = 1.5 -> 2, 5 blocks = 2.5 -> 3 (rounded once, after the blocks)');
select is(meter.price_amount('package', 0.5, 10, null, 1e20), 5000000000000000000::bigint,
          'package: 1e20 units in blocks of 10 at 0.5 = 5e18, exactly');
select is(meter.price_amount('package', 100, 0.5, null, 1.2), 300::bigint,
          'package: a fractional package size (0.5): 1.2 units = 3 blocks');

-- ---------------------------------------------------------------------------------------------
-- price_amount: graduated (each tier's units at its price, plus the flat amount of every tier reached).
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select q, pg_temp.amt('graduated', 'T', q)
      from (values (0::numeric), (0.000001), (1), (100), (100.5), (101), (1000), (1001), (2000)) v(q) order by q$$,
    $$values (0::numeric, 0::bigint),      -- nothing, no flat amount either
             (0.000001, 0),                -- 0.000002
             (1, 2),
             (100, 200),                   -- exactly on the boundary: tier 1 only, no flat 500
             (100.5, 701),                 -- 200 + 0.5 + 500 = 700.5 -> 701
             (101, 701),                   -- 200 + 1 + 500
             (1000, 1600),                 -- 200 + 900 + 500 (boundary: tier 3 not reached)
             (1001, 2601),                 -- 1600 + 0.5 + 1000 = 2600.5 -> 2601
             (2000, 3100)$$,               -- 1600 + 500 + 1000
    'graduated T: tiers filled in turn, a quantity on a boundary stays in the lower tier, a tier''s '
    'flat amount is due once the tier is reached, zero costs nothing');
select is(pg_temp.amt('graduated', 'T_small', 1e20), 1000000001007::bigint,
          'graduated: 1e20 units = 1e6 x 0.001 + (1e20 - 1e6) x 0.00000001 + 7 = 1,000,000,001,006.99 -> 1,000,000,001,007');
select is(pg_temp.amt('graduated', 'T_small', 0.000001), 0::bigint,
          'graduated: 0.000001 units = 0.000000001 -> 0');
select results_eq(
    $$select q, pg_temp.amt('graduated', 'T_flat', q) from (values (0::numeric), (0.5), (10), (11)) v(q) order by q$$,
    $$values (0::numeric, 0::bigint), (0.5, 300), (10, 300), (11, 305)$$,
    'graduated with a flat first tier: zero costs nothing, any usage pays the flat 300, 11 = 300 + 5');

-- ---------------------------------------------------------------------------------------------
-- price_amount: volume (every unit at the price of the tier the total falls in, plus its flat amount).
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select q, pg_temp.amt('volume', 'T', q)
      from (values (0::numeric), (0.000001), (1), (100), (100.5), (101), (1000), (1001)) v(q) order by q$$,
    $$values (0::numeric, 0::bigint),
             (0.000001, 0),
             (1, 2),
             (100, 200),                   -- on the boundary: tier 1 (100 x 2)
             (100.5, 601),                 -- tier 2: 100.5 + 500 = 600.5 -> 601
             (101, 601),                   -- tier 2: 101 + 500
             (1000, 1500),                 -- on the boundary: tier 2
             (1001, 1501)$$,               -- tier 3: 500.5 + 1000 = 1500.5 -> 1501
    'volume T: the whole quantity at its tier''s price plus that tier''s flat amount; a quantity on a '
    'boundary is in the lower tier; zero costs nothing');
select is(pg_temp.amt('volume', 'T_small', 1e20), 1000000000007::bigint,
          'volume: 1e20 units at 0.00000001 + 7 = 1,000,000,000,007');
select is(pg_temp.amt('volume', 'T_small', 1000000), 1000::bigint,
          'volume: 1e6 units (the boundary) at 0.001 = 1000, without the next tier''s flat amount');
select results_eq(
    $$select q, pg_temp.amt('volume', 'T_flat', q) from (values (0::numeric), (0.5), (10), (11)) v(q) order by q$$,
    $$values (0::numeric, 0::bigint), (0.5, 300), (10, 300), (11, 55)$$,
    'volume with a flat first tier: zero costs nothing, up to 10 pays 300, 11 units = 11 x 5 only');

-- ---------------------------------------------------------------------------------------------
-- price_amount: refusals and properties.
-- ---------------------------------------------------------------------------------------------
select throws_ok($$select meter.price_amount('tiered', 1, null, null, 1)$$, '22023', 'unknown price model tiered',
                 'an unknown model is refused (22023)');
select throws_ok($$select meter.price_amount(null, 1, null, null, 1)$$, '22023', 'unknown price model null',
                 'a null model is refused (22023)');
select throws_ok($$select meter.price_amount('per_unit', 1, null, null, -0.000001)$$, '22023',
                 'quantity must not be negative, got -0.000001', 'a negative quantity is refused (22023)');
select throws_ok($$select pg_temp.amt('graduated', 'T', -1)$$, '22023', 'quantity must not be negative, got -1',
                 'a negative quantity is refused for tiered models too');
select volatility_is('meter', 'price_amount', array['text', 'numeric', 'numeric', 'jsonb', 'numeric']::name[],
                     'immutable', 'price_amount is IMMUTABLE (a pure function of its arguments)');

-- ---------------------------------------------------------------------------------------------
-- plan_upsert.
-- ---------------------------------------------------------------------------------------------
create temp table fx as
select meter.plan_upsert('tap-pr-std', 'USD') as plan_std,
       meter.meter_upsert('tap.pr.calls')     as m_calls,
       meter.meter_upsert('tap.pr.bytes', 'sum') as m_bytes,
       meter.meter_upsert('tap.pr.peak', 'max') as m_peak,
       meter.customer_upsert('tap-pr-cust')   as cust;

select results_eq(
    $$select code, name, currency from meter.plans where id = (select plan_std from fx)$$,
    $$values ('tap-pr-std'::text, null::text, 'usd'::text)$$,
    'plan_upsert creates the plan, its currency stored in lower case');
select is(meter.plan_upsert('tap-pr-std', 'usd', 'Standard'), (select plan_std from fx),
          'plan_upsert of an existing code returns the same plan');
select is((select name from meter.plans where code = 'tap-pr-std'), 'Standard', 'and renames it');
select is(meter.plan_upsert('tap-pr-std', 'Usd'), (select plan_std from fx), 'the same currency in any case is accepted');
select is((select name from meter.plans where code = 'tap-pr-std'), 'Standard', 'a null name keeps the name');
select throws_ok($$select meter.plan_upsert('tap-pr-std', 'eur')$$, '22023',
                 'plan tap-pr-std is in usd, not eur: a plan''s currency never changes',
                 'a plan''s currency never changes (22023)');
select is((select currency from meter.plans where code = 'tap-pr-std'), 'usd', 'the plan is still in usd');
select throws_ok($$select meter.plan_upsert('tap-pr-x', 'xyz')$$, '22023',
                 'unknown currency xyz (ISO 4217, e.g. usd, eur, jpy)', 'an unknown currency is refused (22023)');
select throws_ok($$select meter.plan_upsert('tap-pr-x', null)$$, '22023', null, 'a null currency is refused (22023)');
select throws_ok($$select meter.plan_upsert('tap-pr-x', 'us')$$, '22023', null, 'a two-letter currency is refused');
select is_empty($$select 1 from meter.plans where code = 'tap-pr-x'$$, 'no plan was created by the refused calls');
select throws_ok($$select meter.plan_upsert('tap pr', 'usd')$$, '23514', null,
                 'a plan code with a space is refused by the plans_code check');
select meter.plan_upsert('tap-pr-jpy', 'JPY', 'Yen');
select results_eq(
    $$select p.currency, c.minor_unit from meter.plans p join meter.currencies c on c.code = p.currency
      where p.code = 'tap-pr-jpy'$$,
    $$values ('jpy'::text, 0::smallint)$$,
    'a jpy plan: amounts in yen (minor unit 0)');

-- ---------------------------------------------------------------------------------------------
-- plan_price_set: validation (every refusal 22023, nothing stored).
-- ---------------------------------------------------------------------------------------------
select throws_ok($$select meter.plan_price_set('tap-pr-none', 'tap.pr.calls', 'per_unit', 1)$$, '22023',
                 'unknown plan tap-pr-none', 'an unknown plan is refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.none', 'per_unit', 1)$$, '22023',
                 'unknown meter tap.pr.none', 'an unknown meter is refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'tiered', 1)$$, '22023',
                 'model must be per_unit, package, graduated or volume, got tiered', 'an unknown model is refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', null, 1)$$, '22023',
                 'model must be per_unit, package, graduated or volume, got null', 'a null model is refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'per_unit')$$, '22023',
                 'per_unit needs a non-negative unit_amount', 'per_unit without a unit_amount is refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'per_unit', -0.01)$$, '22023',
                 'per_unit needs a non-negative unit_amount', 'per_unit with a negative unit_amount is refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'per_unit', 'NaN')$$, '22023', null,
                 'per_unit with a NaN unit_amount is refused (a close could never price it)');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'per_unit', 'Infinity')$$, '22023', null,
                 'per_unit with an infinite unit_amount is refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'package', 10)$$, '22023',
                 'package needs a positive package_size', 'package without a package_size is refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'package', 10, 0)$$, '22023',
                 'package needs a positive package_size', 'package with a zero package_size is refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'package', 10, 'NaN')$$, '22023', null,
                 'package with a NaN package_size is refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'package', null, 10)$$, '22023',
                 'package needs a non-negative unit_amount', 'package without a unit_amount is refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'graduated')$$, '22023', null,
                 'graduated without tiers is refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'volume', null, null, '{"up_to": null}')$$,
                 '22023', null, 'tiers that are not an array are refused');
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'volume', null, null, '[]')$$,
                 '22023', null, 'an empty tier list is refused');
select throws_ok(
    $$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'graduated', null, null,
          '[{"up_to": 100, "unit_amount": 1}, {"up_to": 100, "unit_amount": 1}, {"up_to": null, "unit_amount": 1}]')$$,
    '22023', 'tier 2: up_to must be a number above the previous tier''s (100)',
    'tiers must ascend strictly (an equal up_to is refused)');
select throws_ok(
    $$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'volume', null, null,
          '[{"up_to": 100, "unit_amount": 1}, {"up_to": 50, "unit_amount": 1}, {"up_to": null, "unit_amount": 1}]')$$,
    '22023', 'tier 2: up_to must be a number above the previous tier''s (100)', 'descending tiers are refused');
select throws_ok(
    $$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'graduated', null, null,
          '[{"up_to": 0, "unit_amount": 1}, {"up_to": null, "unit_amount": 1}]')$$,
    '22023', 'tier 1: up_to must be a number above the previous tier''s (0)', 'a first up_to of 0 is refused');
select throws_ok(
    $$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'graduated', null, null,
          '[{"up_to": null, "unit_amount": 1}, {"up_to": null, "unit_amount": 1}]')$$,
    '22023', 'tier 1: up_to must be a number above the previous tier''s (0)', 'only the last tier may be unbounded');
select throws_ok(
    $$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'graduated', null, null,
          '[{"up_to": 100, "unit_amount": 1}, {"up_to": 200, "unit_amount": 1}]')$$,
    '22023', 'the last tier must have "up_to": null (no upper bound)', 'a bounded last tier is refused');
select throws_ok(
    $$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'volume', null, null,
          '[{"up_to": 100, "unit_amount": -1}, {"up_to": null, "unit_amount": 1}]')$$,
    '22023', 'tier 1: amounts must not be negative', 'a negative tier unit_amount is refused');
select throws_ok(
    $$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'graduated', null, null,
          '[{"up_to": 100, "unit_amount": 1}, {"up_to": null, "unit_amount": 1, "flat_amount": -5}]')$$,
    '22023', 'tier 2: amounts must not be negative', 'a negative flat_amount is refused');
select throws_ok(
    $$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'graduated', null, null,
          '[{"up_to": 100, "unit_amount": 1}, {"up_to": null, "unit_amount": "NaN"}]')$$,
    '22023', null, 'a NaN tier amount is refused');
select throws_ok(
    $$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'volume', null, null,
          '[{"up_to": 100, "unit_amount": 1}, 7]')$$,
    '22023', null, 'a tier that is not an object is refused (it would price every unit above 100 at nothing)');
select is_empty($$select 1 from meter.plan_prices where plan_id = (select plan_std from fx)$$,
                'no price was stored by the refused calls');

-- ---------------------------------------------------------------------------------------------
-- plan_price_set: what is stored, and update semantics.
-- ---------------------------------------------------------------------------------------------
select lives_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'per_unit', 0.5, 10,
                                              '[{"up_to": null, "unit_amount": 1}]')$$,
                'a per_unit price is stored');
select results_eq(
    $$select model, unit_amount, package_size, tiers from meter.plan_prices
      where plan_id = (select plan_std from fx) and meter_id = (select m_calls from fx)$$,
    $$values ('per_unit'::text, 0.5::numeric, null::numeric, null::jsonb)$$,
    'per_unit keeps its unit_amount only (a package_size or tiers given along are not stored)');
select lives_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.bytes', 'package', 25, 10)$$, 'a package price is stored');
update meter.plan_prices set engine_price_id = 'price_tap_pr' where plan_id = (select plan_std from fx);
select lives_ok(
    $$select meter.plan_price_set('tap-pr-std', 'tap.pr.bytes', 'graduated', 25, 10,
          '[{"up_to": 100, "unit_amount": 2}, {"up_to": null, "unit_amount": 1, "flat_amount": 50}]')$$,
    'setting the price of a priced meter again replaces it (package -> graduated)');
select results_eq(
    $$select m.code, p.model, p.unit_amount, p.package_size, p.tiers, p.engine_price_id
      from meter.plan_prices p join meter.meters m on m.id = p.meter_id
      where p.plan_id = (select plan_std from fx) order by m.code$$,
    $$values ('tap.pr.bytes'::text, 'graduated'::text, null::numeric, null::numeric,
              '[{"up_to": 100, "unit_amount": 2}, {"up_to": null, "unit_amount": 1, "flat_amount": 50}]'::jsonb, null::text),
             ('tap.pr.calls', 'per_unit', 0.5, null, null, 'price_tap_pr')$$,
    'one row per (plan, meter): the replaced price has the new model and tiers, no unit_amount or '
    'package_size left over, and its engine price forgotten (it must be mirrored again); the other price is untouched');
select lives_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.bytes', 'volume', null, null,
                                              '[{"up_to": 1.5, "unit_amount": 0.25}, {"up_to": null, "flat_amount": 9}]')$$,
                'fractional boundaries and tiers with only a flat amount (or only a unit amount) are accepted');
select is(meter.price_amount(p.model, p.unit_amount, p.package_size, p.tiers, 2), 9::bigint,
          'and price as written: 2 units fall in the flat tier (9)')
from meter.plan_prices p where p.plan_id = (select plan_std from fx) and p.meter_id = (select m_bytes from fx);

-- ---------------------------------------------------------------------------------------------
-- customer_subscribe.
-- ---------------------------------------------------------------------------------------------
select throws_ok($$select meter.customer_subscribe('tap-pr-nobody', 'tap-pr-std', '2025-03')$$, '22023',
                 'unknown customer tap-pr-nobody', 'an unknown customer is refused');
select throws_ok($$select meter.customer_subscribe('tap-pr-cust', 'tap-pr-none', '2025-03')$$, '22023',
                 'unknown plan tap-pr-none', 'an unknown plan is refused');
select throws_ok($$select meter.customer_subscribe('tap-pr-cust', 'tap-pr-std', '2025-13')$$, '22023',
                 'from must be a period YYYY-MM, got 2025-13', 'a period with month 13 is refused');
select throws_ok($$select meter.customer_subscribe('tap-pr-cust', 'tap-pr-std', '2025-3')$$, '22023',
                 'from must be a period YYYY-MM, got 2025-3', 'a period without its leading zero is refused');
select throws_ok($$select meter.customer_subscribe('tap-pr-cust', 'tap-pr-std', '2025-03-01')$$, '22023', null,
                 'a date is not a period');
select throws_ok($$select meter.customer_subscribe('tap-pr-cust', 'tap-pr-std', null)$$, '22023',
                 'from must be a period YYYY-MM, got null', 'a null period is refused');
select is_empty($$select 1 from meter.customer_plans where customer_id = (select cust from fx)$$,
                'nothing was subscribed by the refused calls');

select lives_ok($$select meter.customer_subscribe('tap-pr-cust', 'tap-pr-jpy', '2025-03')$$, 'a customer subscribes from 2025-03');
select lives_ok($$select meter.customer_subscribe('tap-pr-cust', 'tap-pr-std', '2025-03')$$,
                'subscribing again from the same open period replaces the plan');
select lives_ok($$select meter.customer_subscribe('tap-pr-cust', 'tap-pr-jpy', '2025-06')$$, 'and a change from 2025-06 is added');
select results_eq(
    $$select cp.effective_from, p.code from meter.customer_plans cp join meter.plans p on p.id = cp.plan_id
      where cp.customer_id = (select cust from fx) order by cp.effective_from$$,
    $$values ('2025-03'::text, 'tap-pr-std'::text), ('2025-06', 'tap-pr-jpy')$$,
    'one subscription per (customer, period): std from 2025-03, jpy from 2025-06');

select results_eq(
    $$select outcome, currency from meter.period_close('2025-04', 'tap-pr-cust')$$,
    $$values ('closed'::text, 'usd'::text)$$,
    'closing 2025-04 for the customer (std, in usd)');
select throws_ok($$select meter.customer_subscribe('tap-pr-cust', 'tap-pr-jpy', '2025-04')$$, '55000',
                 'customer tap-pr-cust has a closed period at or after 2025-04: plans change from an open period only',
                 'subscribing from the closed period is refused (55000)');
select throws_ok($$select meter.customer_subscribe('tap-pr-cust', 'tap-pr-jpy', '2025-03')$$, '55000', null,
                 'and from an earlier period (it would change the closed one)');
select lives_ok($$select meter.customer_subscribe('tap-pr-cust', 'tap-pr-std', '2025-05')$$,
                'subscribing from the next, open period is accepted');
select results_eq(
    $$select cp.effective_from, p.code from meter.customer_plans cp join meter.plans p on p.id = cp.plan_id
      where cp.customer_id = (select cust from fx) order by cp.effective_from$$,
    $$values ('2025-03'::text, 'tap-pr-std'::text), ('2025-05', 'tap-pr-std'), ('2025-06', 'tap-pr-jpy')$$,
    'the closed period''s subscription is unchanged');

-- A plan that has invoiced a meter keeps that meter's price: a closed invoice is never re-priced
-- (changing it would turn every closed period of every customer on the plan into an adjustment).
select throws_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'per_unit', 0.75)$$, '55000', null,
                 'changing a price the plan has invoiced is refused (55000): create a new plan instead');
select lives_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.calls', 'per_unit', 0.5)$$,
                'setting the very same price again is accepted (idempotent seed files)');
select lives_ok($$select meter.plan_price_set('tap-pr-std', 'tap.pr.peak', 'per_unit', 2)$$,
                'pricing a meter the plan has not invoiced yet is accepted');
select results_eq(
    $$select m.code, p.model, p.unit_amount from meter.plan_prices p join meter.meters m on m.id = p.meter_id
      where p.plan_id = (select plan_std from fx) and p.model = 'per_unit' order by m.code$$,
    $$values ('tap.pr.calls'::text, 'per_unit'::text, 0.5::numeric), ('tap.pr.peak', 'per_unit', 2)$$,
    'the invoiced price is unchanged');

-- ---------------------------------------------------------------------------------------------
-- Function properties.
-- ---------------------------------------------------------------------------------------------
select volatility_is('meter', 'plan_price_set', array['text', 'text', 'text', 'numeric', 'numeric', 'jsonb', 'jsonb']::name[],
                     'volatile', 'plan_price_set is VOLATILE');
select isnt_definer('meter', 'plan_price_set', array['text', 'text', 'text', 'numeric', 'numeric', 'jsonb', 'jsonb']::name[],
                    'plan_price_set runs with its caller''s rights');

select * from finish();
rollback;
