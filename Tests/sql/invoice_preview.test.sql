-- meter.invoice_preview (issue 16): a customer's invoice for a period as meter.period_close would
-- write it now, from the same function (meter._invoice_draft), or as it was written. Proved here:
-- an ended period's preview equals, line for line, the invoice its close then freezes, with and
-- without adjustment lines; a closed period previews as its frozen invoice; the open period shows
-- the usage so far; refusals.
--
-- Emulated history as in month_close.test.sql (xid 100, then 200 for what arrives after a close).
begin;
select plan(15);
\ir support/fixtures.sql

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-ip-a', null, 'Europe/Paris') as cust,
       meter.customer_upsert('tap-ip-none') as nobody,
       meter.meter_upsert('tap.ip.calls', 'count') as m_calls,
       meter.meter_upsert('tap.ip.tokens', 'sum', null, null, null, null, array['model']) as m_tokens,
       meter.plan_upsert('tap-ip-plan', 'eur') as plan;
select meter.customer_subscribe('tap-ip-a', 'tap-ip-plan', '2024-03');
select meter.plan_price_set('tap-ip-plan', 'tap.ip.calls', 'graduated', null, null,
                            '[{"up_to": 2, "unit_amount": 100}, {"up_to": null, "unit_amount": 10}]');
select meter.plan_price_set('tap-ip-plan', 'tap.ip.tokens', 'per_unit', 0.5, null, null, '{"model": "big"}');
select meter.plan_price_set('tap-ip-plan', 'tap.ip.tokens', 'per_unit', 0.1);

-- March in Paris: 2024-02-29 23:00 UTC to 2024-03-31 22:00 UTC.
select pg_temp.put('tap-ip-a', 'tap.ip.calls', 'c1', '2024-03-05 10:00+00', 1, '{}', '100', pg_catalog.now() - interval '3 hours');
select pg_temp.put('tap-ip-a', 'tap.ip.calls', 'c2', '2024-03-06 10:00+00', 1, '{}', '100', pg_catalog.now() - interval '3 hours');
select pg_temp.put('tap-ip-a', 'tap.ip.calls', 'c3', '2024-03-31 21:59+00', 1, '{}', '100', pg_catalog.now() - interval '3 hours');
select pg_temp.put('tap-ip-a', 'tap.ip.tokens', 't1', '2024-03-05 10:00+00', 30, '{"model": "big"}', '100', pg_catalog.now() - interval '3 hours');
select pg_temp.put('tap-ip-a', 'tap.ip.tokens', 't2', '2024-03-05 11:00+00', 7, '{"model": "small"}', '100', pg_catalog.now() - interval '3 hours');
select ok((select events_folded from meter.rollup_run()) = 5, 'setup: five events rolled up');

create temp table preview_march as
select line_no, kind, line, price_filter, adjusts_period, event_count, quantity, amount, status, currency, period_start, period_end
from meter.invoice_preview('tap-ip-a', '2024-03');
select results_eq(
    $$select line_no, kind, line, event_count, quantity, amount, status from preview_march order by line_no$$,
    $$values (1, 'usage'::text, 'tap.ip.calls'::text, 3::bigint, 3::numeric, 210::bigint, 'ended'::text),
             (2, 'usage', 'tap.ip.tokens [model=big]', 1, 30, 15, 'ended'),
             (3, 'usage', 'tap.ip.tokens [other]', 1, 7, 1, 'ended')$$,
    'an ended period previews as its close would write it: 2 x 100 + 1 x 10; 30 x 0.5; 7 x 0.1 rounded');
select is((select distinct period_start from preview_march), '2024-02-29 23:00+00'::timestamptz,
          'the period is the customer''s billing month (Paris)');

select results_eq($$select outcome from meter.period_close('2024-03', 'tap-ip-a', interval '0')$$,
                  $$values ('closed'::text)$$, 'March closed');
select results_eq(
    $$select l.line_no, l.kind, l.price_filter, l.adjusts_period, l.event_count, l.quantity, l.amount
      from meter.invoice_lines l join meter.invoices i on i.id = l.invoice_id
      where i.customer_id = (select cust from fx) and i.period = '2024-03' order by l.line_no$$,
    $$select line_no, kind, price_filter, adjusts_period, event_count, quantity, amount from preview_march order by line_no$$,
    'the frozen invoice equals the preview taken before the close, line for line');
select results_eq(
    $$select line_no, kind, line, event_count, quantity, amount, status from meter.invoice_preview('tap-ip-a', '2024-03') order by line_no$$,
    $$select line_no, kind, line, event_count, quantity, amount, 'closed'::text from preview_march order by line_no$$,
    'a closed period previews as its frozen invoice');

-- After the close: a late big-model event of March (+10 tokens: +5) and the cancellation of c1
-- (3 calls -> 2: 200, -10). April previews (ended) with both adjustments, and closes the same.
update meter.invoices set closed_at = pg_catalog.now() - interval '2 hours' where customer_id = (select cust from fx);
update meter.rollup_watermark set position_xid = '200', position_id = 0;
select pg_temp.put('tap-ip-a', 'tap.ip.tokens', 't3', '2024-03-20 10:00+00', 10, '{"model": "big"}', '200',
                   pg_catalog.now() - interval '1 hour');
select ok((select status from meter.event_cancel('[{"customer": "tap-ip-a", "idempotency_key": "c1"}]')) = 'cancelled',
          'setup: c1 cancelled after the close');
select ok((select events_folded + cancellations_folded from meter.rollup_run()) = 2, 'setup: both rolled up');
create temp table preview_april as
select line_no, kind, line, price_filter, adjusts_period, event_count, quantity, amount
from meter.invoice_preview('tap-ip-a', '2024-04');
select results_eq(
    $$select line_no, kind, line, adjusts_period, event_count, quantity, amount from preview_april where kind = 'adjustment' order by line_no$$,
    $$values (4, 'adjustment'::text, 'tap.ip.calls'::text, '2024-03'::text, -1::bigint, -1::numeric, -10::bigint),
             (5, 'adjustment', 'tap.ip.tokens [model=big]', '2024-03', 1, 10, 5)$$,
    'April''s preview carries the adjustments for March (a cancelled call: -10; a late big-model event: +5)');
select meter.period_close('2024-04', 'tap-ip-a', interval '0');
select results_eq(
    $$select l.line_no, l.kind, l.price_filter, l.adjusts_period, l.event_count, l.quantity, l.amount
      from meter.invoice_lines l join meter.invoices i on i.id = l.invoice_id
      where i.customer_id = (select cust from fx) and i.period = '2024-04' order by l.line_no$$,
    $$select line_no, kind, price_filter, adjusts_period, event_count, quantity, amount from preview_april order by line_no$$,
    'April''s close equals its preview, adjustments included');

select results_eq(
    $$select status, period, line_no, kind, event_count, amount from meter.invoice_preview('tap-ip-a') order by line_no$$,
    $$select 'open'::text, pg_catalog.to_char(pg_catalog.now() at time zone 'Europe/Paris', 'YYYY-MM'), n, 'usage'::text, 0::bigint, 0::bigint
      from generate_series(1, 3) n$$,
    'without a period: the open one in the customer''s timezone, its usage so far (none), no adjustment left to carry');

-- Refusals.
select throws_ok($$select * from meter.invoice_preview('tap-ip-nobody-at-all')$$, 'P0002', null, 'an unknown customer: P0002');
select throws_ok($$select * from meter.invoice_preview('tap-ip-none', '2024-03')$$, 'P0002', null, 'a customer without a plan: P0002');
select throws_ok($$select * from meter.invoice_preview('tap-ip-a', '2024-3')$$, '22023', null, 'a malformed period: 22023');

select * from finish();
rollback;
