-- Month close (0004_month_close): meter.billing_period (calendar months in the customer's billing
-- timezone, DST included; non-whole-hour month edges refused), meter.period_close (refusals; one
-- invoice per customer with a plan, one usage line per priced meter with event count, quantity by
-- aggregation, amount and events_hash; idempotent; frozen), meter._period_usage (unique_count is a
-- period-wide distinct count; a change of aggregation inside a period is refused), late changes
-- after a close (meter.late_after_close, adjustment lines on the next close) and
-- meter.reconciliation (figures and statuses).
--
-- Emulated history (see rollup_run.test.sql): events are stored directly in meter.events (periods
-- in 2025, far beyond the ingest window) with explicit xids of finished transactions: 100 before
-- rollup run 1; for events "committed after run 1" the watermark is first set back to 200, the
-- horizon run 1 is taken to have had, and they get xid 200. Everything happens in one transaction,
-- so now() is one instant and every invoice closed here has closed_at = now(): a close "two hours
-- ago" is emulated by moving the invoice's closed_at back (allowed only in the closing transaction
-- itself, which is exactly what the frozen-invoice trigger is tested for), and late events and
-- cancellations get an explicit received_at / cancelled_at between that close and now().
-- The suite runs on a freshly migrated database (checked first).
begin;
select plan(102);

-- Neither the close nor the views may depend on the session's time zone (+05:45 here).
set local timezone = 'Asia/Kathmandu';

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
select is_empty($$select 1 from meter.invoices$$, 'precondition: no invoices');

update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-mc-a')                                  as a,
       meter.customer_upsert('tap-mc-paris', null, 'Europe/Paris')        as paris,
       meter.customer_upsert('tap-mc-ny', null, 'America/New_York')       as ny,
       meter.customer_upsert('tap-mc-kol', null, 'Asia/Kolkata')          as kol,
       meter.customer_upsert('tap-mc-ktm', null, 'Asia/Kathmandu')        as ktm,
       meter.customer_upsert('tap-mc-none')                               as none,
       meter.customer_upsert('tap-mc-later')                              as later,
       meter.customer_upsert('tap-mc-rec')                                as rec,
       meter.customer_upsert('tap-mc-tz')                                 as tz,
       meter.customer_upsert('tap-mc-pend')                               as pend,
       meter.customer_upsert('tap-mc-mix')                                as mix,
       meter.meter_upsert('tap.mc.calls')                                 as m_calls,
       meter.meter_upsert('tap.mc.bytes', 'sum')                          as m_bytes,
       meter.meter_upsert('tap.mc.peak', 'max')                           as m_peak,
       meter.meter_upsert('tap.mc.users', 'unique_count', 'user')         as m_users,
       meter.meter_upsert('tap.mc.free')                                  as m_free,
       meter.meter_upsert('tap.mc.mixed')                                 as m_mixed;

-- tap.mc.mixed counts events until 2025-08-15 and sums their values from then on: a version
-- scheduled back then (meter_upsert only schedules future versions, so it is stored directly).
insert into meter.meter_versions (meter_id, version, aggregation, effective_from)
select m_mixed, 2, 'sum', '2025-08-15 00:00+00' from fx;

select meter.plan_upsert('tap-mc-std', 'usd', 'Standard');
select meter.plan_price_set('tap-mc-std', 'tap.mc.calls', 'per_unit', 0.5);
select meter.plan_price_set('tap-mc-std', 'tap.mc.bytes', 'package', 100, 5);
select meter.plan_price_set('tap-mc-std', 'tap.mc.peak', 'volume', null, null,
    '[{"up_to": 5, "unit_amount": 10}, {"up_to": null, "unit_amount": 7, "flat_amount": 20}]');
select meter.plan_price_set('tap-mc-std', 'tap.mc.users', 'graduated', null, null,
    '[{"up_to": 2, "unit_amount": 100, "flat_amount": 50}, {"up_to": null, "unit_amount": 10}]');
select meter.plan_upsert('tap-mc-basic', 'eur');
select meter.plan_price_set('tap-mc-basic', 'tap.mc.calls', 'per_unit', 2);
select meter.plan_upsert('tap-mc-mixp', 'usd');
select meter.plan_price_set('tap-mc-mixp', 'tap.mc.mixed', 'per_unit', 1);

select meter.customer_subscribe('tap-mc-a', 'tap-mc-std', '2025-01');
select meter.customer_subscribe('tap-mc-paris', 'tap-mc-std', '2025-01');
select meter.customer_subscribe('tap-mc-rec', 'tap-mc-basic', '2025-01');
select meter.customer_subscribe('tap-mc-tz', 'tap-mc-basic', '2025-01');
select meter.customer_subscribe('tap-mc-later', 'tap-mc-basic', '2025-06');
select meter.customer_subscribe('tap-mc-pend', 'tap-mc-basic', '2025-08');
select meter.customer_subscribe('tap-mc-mix', 'tap-mc-mixp', '2025-07');

-- An event as the committed transaction p_xid stored it, received at p_received_at (by default
-- three hours ago: before every close, including the one taken to have happened two hours ago).
\ir support/fixtures.sql
\ir support/close_reference.sql
-- Events of this file arrive three hours before now unless told otherwise: before any close.
create function pg_temp.put_before_close(p_customer text, p_meter text, p_key text, p_occurred_at timestamptz,
                                         p_value numeric default 1, p_properties jsonb default '{}', p_xid xid8 default '100',
                                         p_received_at timestamptz default pg_catalog.now() - interval '3 hours')
returns bigint language sql
as $$ select pg_temp.put(p_customer, p_meter, p_key, p_occurred_at, p_value, p_properties, p_xid, p_received_at) $$;

create function pg_temp.eid(p_customer text, p_key text) returns bigint language sql
as $$ select e.id from meter.events e join meter.customers c on c.id = e.customer_id
      where c.external_id = p_customer and e.idempotency_key = p_key $$;

-- The events_hash as documented in sql/functions/_events_hash.sql (the query an auditor runs in
-- psql), for a customer, meter and UTC bounds.
create function pg_temp.doc_hash(p_customer bigint, p_meter bigint, p_from timestamptz, p_to timestamptz)
returns text language sql
as $$
    select encode(sha256(convert_to(coalesce(string_agg(e.idempotency_key || E'\t' || e.value::text, E'\n'
                  order by e.idempotency_key collate "C"), ''), 'UTF8')), 'hex')
    from meter.events e
    where e.customer_id = p_customer and e.meter_id = p_meter and e.occurred_at >= p_from and e.occurred_at < p_to
      and not exists (select 1 from meter.event_cancellations c where c.event_id = e.id)
$$;

-- The hex SHA-256 of a text, for hashes written out.
create function pg_temp.sha(p_text text) returns text language sql
as $$ select encode(sha256(convert_to(p_text, 'UTF8')), 'hex') $$;

-- Invoice lines of this test, by name.
create temp view lines as
select c.external_id as customer, i.period, l.line_no, l.kind, m.code as meter, l.adjusts_period,
       l.event_count, l.quantity, l.amount, l.events_hash, l.description,
       i.customer_id, l.meter_id, i.period_start, i.period_end
from meter.invoice_lines l
join meter.invoices i on i.id = l.invoice_id
join meter.customers c on c.id = i.customer_id
join meter.meters m on m.id = l.meter_id
where c.external_id like 'tap-mc-%';

-- The reconciliation's figures with fixed types.
create temp view recon as
select r.period, r.customer, r.meter, r.raw_events::bigint, r.raw_quantity::numeric, r.duplicates_rejected::bigint,
       r.late_after_close::bigint, r.rollup_quantity::numeric, r.synced_quantity::numeric, r.acknowledged_quantity::numeric,
       r.unsynced_hours::bigint, r.dead_hours::bigint, r.engine_invoice_quantity::numeric,
       r.engine_invoice_amount::numeric, r.invoiced_quantity::numeric, r.invoiced_amount::numeric,
       r.expected_amount::numeric, r.difference::numeric, r.status
from meter.reconciliation r
where r.customer like 'tap-mc-%';

-- ---------------------------------------------------------------------------------------------
-- billing_period.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select period_start, period_end from meter.billing_period((select a from fx), '2025-03')$$,
    $$values ('2025-03-01 00:00+00'::timestamptz, '2025-04-01 00:00+00'::timestamptz)$$,
    'UTC: 2025-03 is [2025-03-01 00:00Z, 2025-04-01 00:00Z)');
select results_eq(
    $$select period_start, period_end, (extract(epoch from period_end - period_start) / 3600)::integer
      from meter.billing_period((select paris from fx), '2025-10')$$,
    $$values ('2025-09-30 22:00+00'::timestamptz, '2025-10-31 23:00+00'::timestamptz, 745)$$,
    'Europe/Paris: 2025-10 runs from local midnight (CEST, 22:00Z) to local midnight (CET, 23:00Z): 745 hours');
select results_eq(
    $$select period_start, period_end, (extract(epoch from period_end - period_start) / 3600)::integer
      from meter.billing_period((select paris from fx), '2025-03')$$,
    $$values ('2025-02-28 23:00+00'::timestamptz, '2025-03-31 22:00+00'::timestamptz, 743)$$,
    'Europe/Paris: 2025-03 (CET to CEST) has 743 hours');
select results_eq(
    $$select p, b.period_start, b.period_end, (extract(epoch from b.period_end - b.period_start) / 3600)::integer
      from (values ('2025-03'), ('2025-11')) v(p), meter.billing_period((select ny from fx), p) b order by p$$,
    $$values ('2025-03'::text, '2025-03-01 05:00+00'::timestamptz, '2025-04-01 04:00+00'::timestamptz, 743),
             ('2025-11', '2025-11-01 04:00+00', '2025-12-01 05:00+00', 721)$$,
    'America/New_York: 2025-03 (EST to EDT) has 743 hours, 2025-11 (EDT to EST) 721');
select results_eq(
    $$select pg_catalog.count(*)::integer,
             pg_catalog.sum(extract(epoch from x.period_end - x.period_start) / 3600)::integer,
             (pg_catalog.count(*) filter (where x.period_end = x.next_start))::integer
      from (select b.period_start, b.period_end, pg_catalog.lead(b.period_start) over (order by m) as next_start
            from pg_catalog.generate_series(1, 12) m,
                 meter.billing_period((select paris from fx), '2025-' || pg_catalog.lpad(m::text, 2, '0')) b) x$$,
    $$values (12, 8760, 11)$$,
    'Europe/Paris 2025: twelve contiguous months (each ends where the next starts), 8760 hours in all');
select throws_ok($$select * from meter.billing_period((select kol from fx), '2025-03')$$, '22023', null,
                 'Asia/Kolkata (+05:30): a month edge on a half hour is refused (22023)');
select throws_ok($$select * from meter.billing_period((select ktm from fx), '2025-03')$$, '22023', null,
                 'Asia/Kathmandu (+05:45) is refused (22023)');
select throws_ok($$select * from meter.billing_period((select a from fx), '2025-00')$$, '22023',
                 'period must be YYYY-MM, got 2025-00', 'a malformed period is refused (22023)');
select throws_ok($$select * from meter.billing_period(-1, '2025-03')$$, '22023', 'unknown customer id -1',
                 'an unknown customer is refused (22023)');

-- ---------------------------------------------------------------------------------------------
-- Committed history (xid 100), folded by run 1.
-- ---------------------------------------------------------------------------------------------
-- tap-mc-a (UTC), 2025-05 unless noted: calls at both month edges, bytes (sum), peak (max), users
-- (unique_count: ann, bob, ann | ann, cy | ann, and one event without the property), free (not priced).
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.calls', 'a-c-prev',  '2025-04-30 23:59:59.999999+00');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.calls', 'a-c-start', '2025-05-01 00:00:00+00');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.calls', 'a-c-1',     '2025-05-10 10:00+00');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.calls', 'a-c-2',     '2025-05-10 10:30+00');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.calls', 'a-c-3',     '2025-05-20 12:00+00');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.calls', 'a-c-end',   '2025-05-31 23:59:59.999999+00');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.calls', 'a-c-next',  '2025-06-01 00:00:00+00');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.bytes', 'a-b1', '2025-05-10 10:05+00', 2.50);
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.bytes', 'a-B2', '2025-05-11 08:00+00', 7);
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.bytes', 'a-b3', '2025-05-12 09:00+00', 0.000001);
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.peak', 'a-p1', '2025-05-10 10:10+00', 3);
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.peak', 'a-p2', '2025-05-10 11:10+00', 9);
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.peak', 'a-p3', '2025-05-15 12:00+00', 4);
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.users', 'a-u1', '2025-05-10 10:01+00', 1, '{"user": "ann"}');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.users', 'a-u2', '2025-05-10 10:02+00', 1, '{"user": "bob"}');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.users', 'a-u3', '2025-05-10 11:01+00', 1, '{"user": "ann"}');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.users', 'a-u4', '2025-05-10 11:02+00', 1, '{"user": "cy"}');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.users', 'a-u5', '2025-05-12 12:00+00', 1, '{"user": "ann"}');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.users', 'a-u6', '2025-05-12 12:30+00', 1, '{"team": "ann"}');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.free', 'a-f1', '2025-05-10 10:00+00');
-- tap-mc-paris (Europe/Paris, CEST = UTC+2 at both edges of May): local 23:59:59.999999 of
-- April 30 and May 31, local midnight of May 1 and June 1.
select pg_temp.put_before_close('tap-mc-paris', 'tap.mc.calls', 'p-c-prev',  '2025-04-30 21:59:59.999999+00');
select pg_temp.put_before_close('tap-mc-paris', 'tap.mc.calls', 'p-c-start', '2025-04-30 22:00:00+00');
select pg_temp.put_before_close('tap-mc-paris', 'tap.mc.calls', 'p-c-end',   '2025-05-31 21:59:59.999999+00');
select pg_temp.put_before_close('tap-mc-paris', 'tap.mc.calls', 'p-c-next',  '2025-05-31 22:00:00+00');
select pg_temp.put_before_close('tap-mc-paris', 'tap.mc.bytes', 'p-b1', '2025-05-15 10:00+00', 5);
select pg_temp.put_before_close('tap-mc-rec', 'tap.mc.calls', 'r-1', '2025-05-10 10:00+00');
select pg_temp.put_before_close('tap-mc-rec', 'tap.mc.calls', 'r-2', '2025-05-10 10:20+00');
select pg_temp.put_before_close('tap-mc-rec', 'tap.mc.calls', 'r-3', '2025-05-10 11:00+00');
select pg_temp.put_before_close('tap-mc-pend', 'tap.mc.calls', 'pd-1', '2025-08-10 10:00+00');
select pg_temp.put_before_close('tap-mc-mix', 'tap.mc.mixed', 'mx-1', '2025-07-10 10:00+00', 4);
select pg_temp.put_before_close('tap-mc-mix', 'tap.mc.mixed', 'mx-2', '2025-08-10 10:00+00', 3);
select pg_temp.put_before_close('tap-mc-mix', 'tap.mc.mixed', 'mx-3', '2025-08-20 10:00+00', 5);
select pg_temp.put_before_close('tap-mc-mix', 'tap.mc.mixed', 'mx-4', '2025-09-05 10:00+00', 2.5);

-- Redeliveries acknowledged as duplicates (two of a-c-1, one of the April a-c-prev) and a conflict,
-- recorded by a long-finished transaction with their event's time, as ingest records them (the
-- rollup counts the duplicates in its ledger, which the reconciliation reads).
insert into meter.event_redeliveries (event_id, verdict, occurred_at, xid, customer_id)
select k.id, k.verdict, e.occurred_at, '100', e.customer_id
from (values (pg_temp.eid('tap-mc-a', 'a-c-1'), 'duplicate'), (pg_temp.eid('tap-mc-a', 'a-c-1'), 'duplicate'),
             (pg_temp.eid('tap-mc-a', 'a-c-1'), 'conflict'), (pg_temp.eid('tap-mc-a', 'a-c-prev'), 'duplicate')) as k(id, verdict)
join meter.events e on e.id = k.id;

select results_eq(
    $$select ran, events_folded, cancellations_folded from meter.rollup_run()$$,
    $$values (true, 33::bigint, 0::bigint)$$,
    'setup: rollup run 1 folds the 33 committed events');

-- ---------------------------------------------------------------------------------------------
-- period_close: refusals (nothing written).
-- ---------------------------------------------------------------------------------------------
select throws_ok(
    pg_catalog.format('select * from meter.period_close(%L, %L)',
                      pg_catalog.to_char(pg_catalog.now() at time zone 'UTC', 'YYYY-MM'), 'tap-mc-a'),
    '55000', null, 'the current period cannot be closed (it has not ended)');
select throws_ok(
    $$select * from meter.period_close('2025-05', 'tap-mc-a', pg_catalog.now() - '2025-06-01 00:00+00'::timestamptz + interval '1 hour')$$,
    '55000', null, 'a period cannot be closed before its end + grace (2025-05 with a grace ending in an hour)');
select throws_ok($$select * from meter.period_close('2025-5')$$, '22023', 'period must be YYYY-MM, got 2025-5',
                 'a malformed period is refused (22023)');
select throws_ok($$select * from meter.period_close('2025-05', 'tap-mc-nobody')$$, '22023', 'unknown customer tap-mc-nobody',
                 'an unknown customer is refused (22023)');
select throws_ok($$select * from meter.period_close('2025-05', 'tap-mc-a', interval '-1 second')$$, '22023',
                 'grace must be a non-negative interval', 'a negative grace is refused (22023)');
select throws_ok($$select * from meter.period_close('2025-05', null, interval '1 hour', array['tap-mc-a', 'tap-mc-nobody'])$$, '22023',
                 'unknown customer tap-mc-nobody', 'an unknown customer in the list of customers is refused (22023)');
select throws_ok($$select * from meter.period_close('2025-05', 'tap-mc-a', interval '1 hour', array['tap-mc-a'])$$, '22023',
                 'give customer or customers, not both', 'a customer and a list of customers together are refused (22023)');
select is_empty($$select 1 from meter.invoices$$, 'the refused closes wrote no invoice');

-- ---------------------------------------------------------------------------------------------
-- period_close('2025-05'): every customer.
-- ---------------------------------------------------------------------------------------------
select pg_temp.ref_expect('2025-05');
create temp table close1 as select * from meter.period_close('2025-05');
select is_empty($$select * from pg_temp.ref_differences(array(select invoice_id from close1 where outcome = 'closed'))$$,
                'close of 2025-05, every customer: the set-based close wrote exactly the lines of the per-customer pricing (support/close_reference.sql)');

select results_eq(
    $$select customer, period, outcome, lines, total, currency, invoice_id is not null
      from close1 order by customer collate "C"$$,
    $$values ('tap-mc-a'::text, '2025-05'::text, 'closed'::text, 4, 546::bigint, 'usd'::text, true),
             ('tap-mc-kol',   '2025-05', 'no_plan', 0, null, null, false),
             ('tap-mc-ktm',   '2025-05', 'no_plan', 0, null, null, false),
             ('tap-mc-later', '2025-05', 'no_plan', 0, null, null, false),
             ('tap-mc-mix',   '2025-05', 'no_plan', 0, null, null, false),
             ('tap-mc-none',  '2025-05', 'no_plan', 0, null, null, false),
             ('tap-mc-ny',    '2025-05', 'no_plan', 0, null, null, false),
             ('tap-mc-paris', '2025-05', 'closed', 4, 101, 'usd', true),
             ('tap-mc-pend',  '2025-05', 'no_plan', 0, null, null, false),
             ('tap-mc-rec',   '2025-05', 'closed', 1, 6, 'eur', true),
             ('tap-mc-tz',    '2025-05', 'closed', 1, 0, 'eur', true)$$,
    'one row per customer: closed for those with a plan in force at the period start (total, lines, '
    'the plan''s currency), no_plan for the others (a plan from 2025-06 on does not cover 2025-05)');

select results_eq(
    $$select c.external_id, i.period, i.period_start, i.period_end, p.code, i.currency, i.subtotal, i.total
      from meter.invoices i join meter.customers c on c.id = i.customer_id join meter.plans p on p.id = i.plan_id
      order by c.external_id collate "C"$$,
    $$values ('tap-mc-a'::text, '2025-05'::text, '2025-05-01 00:00+00'::timestamptz, '2025-06-01 00:00+00'::timestamptz,
              'tap-mc-std'::text, 'usd'::text, 546::bigint, 546::bigint),
             ('tap-mc-paris', '2025-05', '2025-04-30 22:00+00', '2025-05-31 22:00+00', 'tap-mc-std', 'usd', 101, 101),
             ('tap-mc-rec', '2025-05', '2025-05-01 00:00+00', '2025-06-01 00:00+00', 'tap-mc-basic', 'eur', 6, 6),
             ('tap-mc-tz', '2025-05', '2025-05-01 00:00+00', '2025-06-01 00:00+00', 'tap-mc-basic', 'eur', 0, 0)$$,
    'the invoices: the period''s UTC bounds in the customer''s timezone, the plan, its currency, total = subtotal');

select results_eq(
    $$select line_no, kind, meter, adjusts_period, event_count, quantity, amount, description
      from lines where customer = 'tap-mc-a' and period = '2025-05' order by line_no$$,
    $$values (1, 'usage'::text, 'tap.mc.bytes'::text, null::text, 3::bigint, 9.500001::numeric, 200::bigint,
              'tap.mc.bytes: 9.500001 (sum, package)'::text),
             (2, 'usage', 'tap.mc.calls', null, 5, 5, 3, 'tap.mc.calls: 5 (count, per_unit)'),
             (3, 'usage', 'tap.mc.peak', null, 3, 9, 83, 'tap.mc.peak: 9 (max, volume)'),
             (4, 'usage', 'tap.mc.users', null, 6, 3, 260, 'tap.mc.users: 3 (unique_count, graduated)')$$,
    'tap-mc-a 2025-05: one usage line per priced meter, by meter code (the unpriced tap.mc.free has none): '
    'calls 5 events at 0.5 = 2.5 -> 3; bytes sum 9.500001 = 2 packages of 5 at 100; peak max 9 in the '
    'volume tier above 5: 9 x 7 + 20; users 3 distinct over the period (ann, bob, cy; not 5, the sum of '
    'hourly distinct counts): 2 x 100 + 50 + 1 x 10');

select results_eq(
    $$select line_no, meter, event_count, quantity, amount
      from lines where customer = 'tap-mc-paris' and period = '2025-05' order by line_no$$,
    $$values (1, 'tap.mc.bytes'::text, 1::bigint, 5::numeric, 100::bigint),
             (2, 'tap.mc.calls', 2, 2, 1),
             (3, 'tap.mc.peak', 0, 0, 0),
             (4, 'tap.mc.users', 0, 0, 0)$$,
    'tap-mc-paris 2025-05 (local month): the events at local 00:00 May 1 and 23:59:59.999999 May 31, '
    'not those at 23:59:59.999999 April 30 and 00:00 June 1; meters without usage get a zero line');

select is_empty(
    $$select customer, period, meter from lines
      where events_hash is distinct from pg_temp.doc_hash(customer_id, meter_id, period_start, period_end)$$,
    'every line''s events_hash equals the psql recomputation documented in _events_hash.sql');
select is((select pg_catalog.count(*) from lines where events_hash ~ '^[0-9a-f]{64}$'), 10::bigint,
          'and there are ten lines, each with a hex SHA-256');
select results_eq(
    $$select meter, events_hash from lines where customer = 'tap-mc-a' and meter in ('tap.mc.calls', 'tap.mc.bytes')
      order by meter$$,
    $$values ('tap.mc.bytes'::text, pg_temp.sha(E'a-B2\t7\na-b1\t2.50\na-b3\t0.000001')),
             ('tap.mc.calls', pg_temp.sha(E'a-c-1\t1\na-c-2\t1\na-c-3\t1\na-c-end\t1\na-c-start\t1'))$$,
    'events_hash written out: "key<TAB>value" lines sorted by key in byte order (a-B2 before a-b1), '
    'values as stored (2.50), exactly the period''s events (a-c-start and a-c-end, not a-c-prev or a-c-next)');
select results_eq(
    $$select events_hash from lines where customer = 'tap-mc-paris' and meter in ('tap.mc.calls', 'tap.mc.peak')
      order by meter$$,
    $$values (pg_temp.sha(E'p-c-end\t1\np-c-start\t1')),
             ('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')$$,
    'the Paris calls line hashes its two events; a line without events hashes the empty string');

-- The edges from the other side: the Paris April and June.
select results_eq(
    $$select period, outcome, lines, total from meter.period_close('2025-04', 'tap-mc-paris')
      union all
      select period, outcome, lines, total from meter.period_close('2025-06', 'tap-mc-paris')$$,
    $$values ('2025-04'::text, 'closed'::text, 4, 1::bigint), ('2025-06', 'closed', 4, 1)$$,
    'tap-mc-paris: 2025-04 (closed after 2025-05) and 2025-06 close with one call each (0.5 -> 1)');
select results_eq(
    $$select period, period_start, period_end, event_count, events_hash from lines
      where customer = 'tap-mc-paris' and meter = 'tap.mc.calls' order by period_start$$,
    $$values ('2025-04'::text, '2025-03-31 22:00+00'::timestamptz, '2025-04-30 22:00+00'::timestamptz, 1::bigint,
              pg_temp.sha(E'p-c-prev\t1')),
             ('2025-05', '2025-04-30 22:00+00', '2025-05-31 22:00+00', 2, pg_temp.sha(E'p-c-end\t1\np-c-start\t1')),
             ('2025-06', '2025-05-31 22:00+00', '2025-06-30 22:00+00', 1, pg_temp.sha(E'p-c-next\t1'))$$,
    'each Paris edge event is on exactly one invoice: 23:59:59.999999 local in the month it ends, '
    '00:00 local in the month it starts');

-- ---------------------------------------------------------------------------------------------
-- A second close changes nothing.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select customer, outcome from meter.period_close('2025-05', null, interval '1 hour', array['tap-mc-paris', 'tap-mc-a'])$$,
    $$select customer, 'already_closed'::text from close1 where customer in ('tap-mc-paris', 'tap-mc-a') order by invoice_id$$,
    'a list of customers: only those, one row each, in customer id order (here both closed already)');
create temp table counts0 as
select (select pg_catalog.count(*) from meter.invoices) as invoices, (select pg_catalog.count(*) from meter.invoice_lines) as lines;
select pg_temp.ref_expect('2025-05');
create temp table close2 as select * from meter.period_close('2025-05');
select is_empty($$select * from pg_temp.ref_differences(array(select invoice_id from close2 where outcome = 'closed'))$$,
                'second close of 2025-05: the set-based close wrote exactly the lines of the per-customer pricing (support/close_reference.sql)');

select results_eq(
    $$select customer, invoice_id, outcome, lines, total, currency from close2 where outcome <> 'no_plan'
      order by customer collate "C"$$,
    $$select customer, invoice_id, 'already_closed'::text, lines, total, currency from close1 where outcome = 'closed'
      order by customer collate "C"$$,
    'closing 2025-05 again: already_closed, with the same invoice, line count, total and currency');
select results_eq(
    $$select (select pg_catalog.count(*) from meter.invoices), (select pg_catalog.count(*) from meter.invoice_lines)$$,
    $$select invoices, lines from counts0$$,
    'and creates no invoice or line');

-- ---------------------------------------------------------------------------------------------
-- Frozen invoices.
-- ---------------------------------------------------------------------------------------------
select throws_ok(
    $$update meter.invoice_lines set amount = 0
      where invoice_id = (select invoice_id from close1 where customer = 'tap-mc-a')$$,
    '42501', 'invoice_lines rows are final once their period is closed', 'an invoice line cannot be updated (42501)');
select throws_ok(
    $$delete from meter.invoice_lines where invoice_id = (select invoice_id from close1 where customer = 'tap-mc-a')$$,
    '42501', 'invoice_lines rows are final once their period is closed', 'an invoice line cannot be deleted (42501)');
-- tap-mc-a's 2025-05 close is now taken to have committed two hours ago.
select lives_ok(
    $$update meter.invoices set closed_at = pg_catalog.now() - interval '2 hours'
      where id = (select invoice_id from close1 where customer = 'tap-mc-a')$$,
    'in the transaction that closed it, the invoice can still be written (period_close sets the total so)');
select throws_ok(
    $$update meter.invoices set total = 0 where id = (select invoice_id from close1 where customer = 'tap-mc-a')$$,
    '42501', 'invoices rows are final once their period is closed',
    'an invoice closed in an earlier transaction cannot be updated (42501)');
select throws_ok(
    $$delete from meter.invoices where id = (select invoice_id from close1 where customer = 'tap-mc-a')$$,
    '42501', 'invoices rows are final once their period is closed',
    'nor deleted (42501)');
select results_eq(
    $$select total, closed_at from meter.invoices where id = (select invoice_id from close1 where customer = 'tap-mc-a')$$,
    $$values (546::bigint, pg_catalog.now() - interval '2 hours')$$,
    'the invoice is unchanged');
select throws_ok(
    $$insert into meter.invoice_lines (invoice_id, line_no, kind, meter_id, event_count, quantity, amount, description)
      select invoice_id, 99, 'usage', (select id from meter.meters limit 1), 0, 0, 0, 'sneaked in'
      from close1 where customer = 'tap-mc-a'$$,
    '42501', null, 'no line is added to an invoice closed in an earlier transaction (42501)');
select throws_ok($$truncate meter.invoice_lines$$, '42501', null, 'invoice lines cannot be truncated');
select meter.plan_upsert('tap-mc-yen', 'jpy');
select throws_ok(
    $$select meter.customer_subscribe('tap-mc-a', 'tap-mc-yen', '2099-01')$$,
    '55000', null, 'an invoiced customer cannot move to a plan in another currency (55000)');

-- ---------------------------------------------------------------------------------------------
-- Timezones at close.
-- ---------------------------------------------------------------------------------------------
select meter.customer_subscribe('tap-mc-kol', 'tap-mc-basic', '2025-01');
select throws_ok($$select * from meter.period_close('2025-06', 'tap-mc-kol')$$, '22023', null,
                 'a customer with a plan in Asia/Kolkata cannot be closed (22023): its month edges split UTC hours');
select throws_ok($$select * from meter.period_close('2025-06')$$, '22023', null,
                 'and closing everyone fails with it');
select is_empty($$select 1 from meter.invoices where period = '2025-06' and customer_id <> (select paris from fx)$$,
                'writing nothing for anyone (tap-mc-a, closed before tap-mc-kol in that call, has no 2025-06 invoice)');

select throws_ok($$select meter.customer_upsert('tap-mc-tz', null, 'Europe/Paris')$$, '55000', null,
                 'a customer with a closed period cannot change its billing timezone (55000)');
select results_eq(
    $$select billing_timezone from meter.customers where external_id = 'tap-mc-tz'
      union all select outcome from meter.period_close('2025-05', 'tap-mc-tz')
      union all select pg_catalog.count(*)::text from meter.invoices where customer_id = (select tz from fx)$$,
    $$values ('UTC'::text), ('already_closed'), ('1')$$,
    'so 2025-05 stays closed, once (in Europe/Paris it would have other bounds, and a second invoice)');
select lives_ok($$select meter.customer_upsert('tap-mc-tz', 'TZ', 'UTC')$$,
                'giving its timezone again (with a new name) is accepted');
select lives_ok($$select meter.customer_upsert('tap-mc-later', null, 'Europe/Paris')$$,
                'a customer without a closed period may change its timezone');

-- ---------------------------------------------------------------------------------------------
-- A meter whose aggregation changes inside a period (tap.mc.mixed: count, then sum from 2025-08-15).
-- ---------------------------------------------------------------------------------------------
select throws_ok(
    $$select * from meter._period_usage((select mix from fx), (select m_mixed from fx), '2025-08-01 00:00+00', '2025-09-01 00:00+00')$$,
    '55000', null, '_period_usage refuses a range in which the aggregation changes (55000)');
select results_eq(
    $$select u.event_count, u.quantity, u.aggregation
      from (values ('2025-07-01 00:00+00'::timestamptz, '2025-08-01 00:00+00'::timestamptz),
                   ('2025-09-01 00:00+00', '2025-10-01 00:00+00')) v(f, t),
           meter._period_usage((select mix from fx), (select m_mixed from fx), v.f, v.t) u
      order by v.f$$,
    $$values (1::bigint, 1::numeric, 'count'::text), (1, 2.5, 'sum')$$,
    'on either side of the change it counts (2025-07) and sums (2025-09)');
select results_eq(
    $$select period, outcome, total from meter.period_close('2025-07', 'tap-mc-mix')$$,
    $$values ('2025-07'::text, 'closed'::text, 1::bigint)$$, 'tap-mc-mix closes 2025-07');
select throws_ok($$select * from meter.period_close('2025-08', 'tap-mc-mix')$$, '55000', null,
                 'but not 2025-08 (55000)');
select results_eq(
    $$select outcome, total from meter.period_close('2025-09', 'tap-mc-mix')
      union all select 'line', pg_catalog.count(*) from lines where customer = 'tap-mc-mix' and period = '2025-08'$$,
    $$values ('closed'::text, 3::bigint), ('line', 0)$$,
    '2025-09 closes (2.5 at 1 -> 3), and 2025-08 has no invoice');

-- ---------------------------------------------------------------------------------------------
-- Reconciliation statuses (tap-mc-rec, 2025-05: 3 calls at 2 = 6 eur).
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select raw_events, raw_quantity, duplicates_rejected, late_after_close, rollup_quantity, synced_quantity,
             unsynced_hours, dead_hours, engine_invoice_quantity, engine_invoice_amount, invoiced_quantity,
             invoiced_amount, expected_amount, difference, status
      from recon where customer = 'tap-mc-rec' and period = '2025-05'$$,
    $$values (3::bigint, 3::numeric, 0::bigint, 0::bigint, 3::numeric, null::numeric, 0::bigint, 0::bigint,
              null::numeric, null::numeric, 3::numeric, 6::numeric, 6::numeric, 0::numeric, 'MATCH'::text)$$,
    'reconciliation: raw events = rollup = invoiced, not billed in the engine (no outbox rows, no engine invoice): MATCH');

insert into meter.sync_outbox (customer_id, meter_id, hour, revision, state)
select rec, m_calls, '2025-05-10 10:00+00'::timestamptz, 1, 'pending' from fx
union all select rec, m_calls, '2025-06-10 10:00+00'::timestamptz, 1, 'dead' from fx;
select results_eq(
    $$select synced_quantity, acknowledged_quantity, unsynced_hours, dead_hours, status from recon where customer = 'tap-mc-rec' and period = '2025-05'$$,
    $$values (null::numeric, 0::numeric, 1::bigint, 0::bigint, 'MISMATCH: unsynced hours'::text)$$,
    'a pending outbox hour of the period: MISMATCH: unsynced hours (a dead hour of June does not count)');
insert into meter.sync_outbox (customer_id, meter_id, hour, revision, state)
select rec, m_calls, '2025-05-10 11:00+00', 1, 'dead' from fx;
select results_eq(
    $$select unsynced_hours, dead_hours, status from recon where customer = 'tap-mc-rec' and period = '2025-05'$$,
    $$values (1::bigint, 1::bigint, 'MISMATCH: dead-letter'::text)$$,
    'a dead hour too: MISMATCH: dead-letter comes first');
update meter.sync_outbox set last_error = 'HTTP 400 timestamp_too_far_in_past: more than 35 days before the current time'
where hour = '2025-05-10 11:00+00' and state = 'dead';
select is((select status from recon where customer = 'tap-mc-rec' and period = '2025-05'),
          'MISMATCH: dead-letter, older than the engine takes',
          'a dead hour the engine no longer takes (Billing Meters: 35 days back) is named as such');
update meter.sync_outbox o set state = 'synced', synced_revision = o.revision,
       synced_quantity = case when o.hour = '2025-05-10 10:00+00' then 2 else 1 end
where o.customer_id = (select rec from fx) and o.hour < '2025-06-01';
select results_eq(
    $$select synced_quantity, acknowledged_quantity, unsynced_hours, dead_hours, status
      from recon where customer = 'tap-mc-rec' and period = '2025-05'$$,
    $$values (null::numeric, 3::numeric, 0::bigint, 0::bigint, 'MISMATCH: engine usage not fetched'::text)$$,
    'both hours acknowledged (2 + 1), but the engine''s own figure never asked: MISMATCH: engine usage not fetched');
-- The engine's figure (meter.billing_usage_record, as EngineUsage stores its summaries): 3000
-- milli-calls at value scale 3 is 3 calls.
select is(meter.billing_usage_record((select rec from fx), (select m_calls from fx), '2025-05-01 00:00+00',
                                     '2025-06-01 00:00+00', 'meter_events', 'mtr_tap', 3000, 3),
          3::numeric, 'billing_usage_record: the engine''s 3000 at value scale 3 is 3 in our unit');
select results_eq(
    $$select synced_quantity, acknowledged_quantity, status from recon where customer = 'tap-mc-rec' and period = '2025-05'$$,
    $$values (3::numeric, 3::numeric, 'MATCH'::text)$$,
    'the engine holds what we invoiced (3), the outbox agrees: MATCH');
select is(meter.billing_usage_record((select rec from fx), (select m_calls from fx), '2025-05-01 00:00+00',
                                     '2025-06-01 00:00+00', 'meter_events', 'mtr_tap', 2, 0),
          2::numeric, 'a newer fetch replaces the figure');
select results_eq(
    $$select synced_quantity, acknowledged_quantity, status from recon where customer = 'tap-mc-rec' and period = '2025-05'$$,
    $$values (2::numeric, 3::numeric, 'MISMATCH: engine quantity differs'::text)$$,
    'the engine holds 2 though the outbox says 3 were acknowledged: MISMATCH: engine quantity differs (the engine''s word, not ours)');
select is((select pg_catalog.count(*) from meter.billing_usage where customer_id = (select rec from fx)), 1::bigint,
          'one row per (customer, meter, period)');
update meter.billing_usage set quantity = 3 where customer_id = (select rec from fx);
update meter.sync_outbox set synced_quantity = 0 where customer_id = (select rec from fx) and hour = '2025-05-10 11:00+00';
select results_eq(
    $$select synced_quantity, acknowledged_quantity, status from recon where customer = 'tap-mc-rec' and period = '2025-05'$$,
    $$values (3::numeric, 2::numeric, 'MISMATCH: acknowledged quantity differs'::text)$$,
    'the engine agrees but the outbox recorded 2: MISMATCH: acknowledged quantity differs (a sync defect)');
select throws_ok($$select meter.billing_usage_record((select rec from fx), (select m_calls from fx), '2025-05-01 00:00+00',
                                                      '2025-06-01 00:00+00', 'meter_events', 'mtr_tap', 1, 13)$$,
                 '22023', null, 'a value scale above 12 is refused (22023)');
delete from meter.billing_usage where customer_id = (select rec from fx);
delete from meter.sync_outbox where customer_id = (select rec from fx);

insert into meter.billing_invoices (invoice_id, billing_customer_id, customer_id, status, status_rank, currency,
                                    period_start, period_end, subtotal, total, amount_due, amount_paid, created, last_event_id)
select 'in_tap_mc_rec', 'cus_tap_mc_rec', rec, 'open', 2, 'eur', '2025-05-01 00:00+00', '2025-06-01 00:00+00',
       6, 6, 6, 0, pg_catalog.now(), 'evt_tap_mc_rec' from fx;
insert into meter.billing_invoice_lines (invoice_id, line_id, customer_id, meter_id, quantity, amount, currency,
                                         period_start, period_end)
select 'in_tap_mc_rec', 'il_tap_mc_rec', rec, m_calls, 3, 6, 'eur', '2025-05-01 00:00+00', '2025-06-01 00:00+00' from fx;
select results_eq(
    $$select engine_invoice_quantity, engine_invoice_amount, status from recon where customer = 'tap-mc-rec' and period = '2025-05'$$,
    $$values (3::numeric, 6::numeric, 'MATCH'::text)$$,
    'the engine''s invoice line agrees (3 calls, 6): MATCH');
update meter.billing_invoice_lines set amount = 7 where invoice_id = 'in_tap_mc_rec';
select results_eq(
    $$select engine_invoice_amount, expected_amount, status from recon where customer = 'tap-mc-rec' and period = '2025-05'$$,
    $$values (7::numeric, 6::numeric, 'MISMATCH: engine amount differs'::text)$$,
    'an engine amount other than ours: MISMATCH: engine amount differs');
delete from meter.billing_invoice_lines where invoice_id = 'in_tap_mc_rec';
delete from meter.billing_invoices where invoice_id = 'in_tap_mc_rec';

-- ---------------------------------------------------------------------------------------------
-- After the close: late events and cancellations (committed after run 1: xid 200).
-- tap-mc-a's 2025-05 was closed two hours ago (above); an hour ago arrived a call of May 20
-- (late), a call of June 15 (June is open: not late), a peak of May 15 below the maximum, and the
-- cancellation of a-B2 (bytes 7); 50 minutes ago that late peak was cancelled again.
-- tap-mc-rec's 2025-05 was closed now: r-5, received an hour ago (before that close) but
-- committed after it, is not late. tap-mc-pend's pd-1 (2025-08) is cancelled and not rolled up.
-- ---------------------------------------------------------------------------------------------
update meter.rollup_watermark set position_xid = '200', position_id = 0;

select pg_temp.put_before_close('tap-mc-a', 'tap.mc.calls', 'a-c-late', '2025-05-20 13:00+00', 1, '{}', '200', pg_catalog.now() - interval '1 hour');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.calls', 'a-c-jun2', '2025-06-15 10:00+00', 1, '{}', '200', pg_catalog.now() - interval '1 hour');
select pg_temp.put_before_close('tap-mc-a', 'tap.mc.peak', 'a-p-late', '2025-05-15 13:00+00', 1, '{}', '200', pg_catalog.now() - interval '1 hour');
select pg_temp.put_before_close('tap-mc-rec', 'tap.mc.calls', 'r-5', '2025-05-10 12:00+00', 1, '{}', '200', pg_catalog.now() - interval '1 hour');
select results_eq(
    $$select status from meter.event_cancel(
          '[{"customer": "tap-mc-a", "idempotency_key": "a-B2"}, {"customer": "tap-mc-a", "idempotency_key": "a-p-late"},
            {"customer": "tap-mc-pend", "idempotency_key": "pd-1"}]')$$,
    $$values ('cancelled'::text), ('cancelled'), ('cancelled')$$,
    'setup: a-B2, a-p-late and pd-1 are cancelled');
update meter.event_cancellations set cancelled_at = pg_catalog.now() - interval '1 hour' where event_id = pg_temp.eid('tap-mc-a', 'a-B2');
update meter.event_cancellations set cancelled_at = pg_catalog.now() - interval '50 minutes' where event_id = pg_temp.eid('tap-mc-a', 'a-p-late');

select results_eq(
    $$select meter, period, kind, idempotency_key, occurred_at, arrived_at, closed_at, adjusted_on
      from meter.late_after_close where customer like 'tap-mc-%' order by meter, kind$$,
    $$values ('tap.mc.bytes'::text, '2025-05'::text, 'cancellation'::text, 'a-B2'::text, '2025-05-11 08:00+00'::timestamptz,
              pg_catalog.now() - interval '1 hour', pg_catalog.now() - interval '2 hours', null::text),
             ('tap.mc.calls', '2025-05', 'event', 'a-c-late', '2025-05-20 13:00+00',
              pg_catalog.now() - interval '1 hour', pg_catalog.now() - interval '2 hours', null),
             ('tap.mc.peak', '2025-05', 'cancellation', 'a-p-late', '2025-05-15 13:00+00',
              pg_catalog.now() - interval '50 minutes', pg_catalog.now() - interval '2 hours', null),
             ('tap.mc.peak', '2025-05', 'event', 'a-p-late', '2025-05-15 13:00+00',
              pg_catalog.now() - interval '1 hour', pg_catalog.now() - interval '2 hours', null)$$,
    'late_after_close lists the late event, the late cancellation and the late event cancelled again '
    '(twice), not adjusted yet; not the June event (open period) nor r-5 (received before its close)');

select results_eq(
    $$select meter, late_after_close, status from recon where customer = 'tap-mc-a' and period = '2025-05' order by meter$$,
    $$values ('tap.mc.bytes'::text, 1::bigint, 'MISMATCH: late-after-close not adjusted yet'::text),
             ('tap.mc.calls', 1, 'MISMATCH: late-after-close not adjusted yet'),
             ('tap.mc.peak', 2, 'MISMATCH: late-after-close not adjusted yet'),
             ('tap.mc.users', 0, 'MATCH')$$,
    'reconciliation of tap-mc-a 2025-05: MISMATCH: late-after-close not adjusted yet for the meters with late rows');

select throws_ok($$select * from meter.period_close('2025-06', 'tap-mc-a')$$, '55000',
                 'events of customer tap-mc-a before 2025-07-01 00:00:00+00 are not rolled up yet',
                 'closing 2025-06 is refused while events (of 2025-05 and 2025-06) are past the rollup watermark (55000)');
select throws_ok($$select * from meter.period_close('2025-08', 'tap-mc-pend')$$, '55000',
                 'cancellations of events of customer tap-mc-pend before 2025-09-01 00:00:00+00 are not rolled up yet',
                 'closing is refused while a cancellation of the period is not rolled up (55000)');

select results_eq(
    $$select ran, events_folded, cancellations_folded from meter.rollup_run()$$,
    $$values (true, 4::bigint, 3::bigint)$$,
    'rollup run 2 folds the 4 late events and the 3 cancellations');

select results_eq(
    $$select meter, rollup_quantity, invoiced_quantity, invoiced_amount, expected_amount, difference, status
      from recon where customer = 'tap-mc-a' and period = '2025-05' order by meter$$,
    $$values ('tap.mc.bytes'::text, 2.500001::numeric, 9.500001::numeric, 200::numeric, 100::numeric, 100::numeric,
              'MISMATCH: late-after-close not adjusted yet'::text),
             ('tap.mc.calls', 6, 5, 3, 3, 0, 'MISMATCH: late-after-close not adjusted yet'),
             ('tap.mc.peak', 9, 9, 83, 83, 0, 'MATCH'),
             ('tap.mc.users', 3, 3, 260, 260, 0, 'MATCH')$$,
    'rolled up, the rollups are ahead of the invoice (bytes 9.500001 -> 2.500001: one package, 100 less); '
    'still not adjusted; peak''s late event and its cancellation, both folded, change nothing: no adjustment is due (decision 123)');
select results_eq(
    $$select raw_events, rollup_quantity, invoiced_quantity, expected_amount, difference, status
      from recon where customer = 'tap-mc-rec' and period = '2025-05'$$,
    $$values (4::bigint, 4::numeric, 3::numeric, 8::numeric, -2::numeric, 'MISMATCH: late-after-close not adjusted yet'::text)$$,
    'tap-mc-rec 2025-05: r-5, received before the close but committed and folded after it, is not on the invoice: '
    'late for the reconciliation (the ledger counts what was folded after the close; meter.late_after_close, by arrival, does not list it)');

-- ---------------------------------------------------------------------------------------------
-- The next close adjusts.
-- ---------------------------------------------------------------------------------------------
select pg_temp.ref_expect('2025-06', 'tap-mc-a');
select results_eq(
    $$select period, outcome, lines, total, currency from meter.period_close('2025-06', 'tap-mc-a')$$,
    $$values ('2025-06'::text, 'closed'::text, 6, -99::bigint, 'usd'::text)$$,
    'tap-mc-a closes 2025-06: four usage lines and two adjustments, total 1 - 100 + 0 = -99');
select is_empty($$select * from pg_temp.ref_differences(pg_temp.invoices_of('tap-mc-a', '2025-06'))$$,
                'tap-mc-a 2025-06, with adjustments: the set-based close wrote exactly the lines of the per-customer pricing (support/close_reference.sql)');
select results_eq(
    $$select line_no, kind, meter, adjusts_period, event_count, quantity, amount
      from lines where customer = 'tap-mc-a' and period = '2025-06' order by line_no$$,
    $$values (1, 'usage'::text, 'tap.mc.bytes'::text, null::text, 0::bigint, 0::numeric, 0::bigint),
             (2, 'usage', 'tap.mc.calls', null, 2, 2, 1),
             (3, 'usage', 'tap.mc.peak', null, 0, 0, 0),
             (4, 'usage', 'tap.mc.users', null, 0, 0, 0),
             (5, 'adjustment', 'tap.mc.bytes', '2025-05', -1, -7, -100),
             (6, 'adjustment', 'tap.mc.calls', '2025-05', 1, 1, 0)$$,
    'June usage (a-c-next at 00:00 June 1 and the late a-c-jun2), then one adjustment per changed meter of '
    '2025-05: bytes -1 event, -7, -100 (re-priced: 1 package instead of 2); calls +1 event, +1, and 0 '
    '(6 x 0.5 = 3 re-priced, as invoiced: not round(0.5) = 1); peak unchanged (its late event was cancelled): none');
select results_eq(
    $$select description from lines where customer = 'tap-mc-a' and period = '2025-06' and kind = 'adjustment' order by line_no$$,
    $$values ('tap.mc.bytes: adjustment for 2025-05 (events or cancellations after its close): 9.500001 -> 2.500001'::text),
             ('tap.mc.calls: adjustment for 2025-05 (events or cancellations after its close): 5 -> 6')$$,
    'adjustment descriptions name the period and the quantities before and after');
select results_eq(
    $$select meter, events_hash from lines where customer = 'tap-mc-a' and period = '2025-06' and meter = 'tap.mc.calls'
      order by line_no$$,
    $$values ('tap.mc.calls'::text, pg_temp.sha(E'a-c-jun2\t1\na-c-next\t1')),
             ('tap.mc.calls', pg_temp.sha(E'a-c-1\t1\na-c-2\t1\na-c-3\t1\na-c-end\t1\na-c-late\t1\na-c-start\t1'))$$,
    'the usage line hashes June''s events; the adjustment hashes all of 2025-05''s events as they stand now');
select is_empty(
    $$select customer, period, meter, kind from lines l
      where l.events_hash is distinct from pg_temp.doc_hash(l.customer_id, l.meter_id,
                coalesce((select i.period_start from meter.invoices i where i.customer_id = l.customer_id and i.period = l.adjusts_period), l.period_start),
                coalesce((select i.period_end from meter.invoices i where i.customer_id = l.customer_id and i.period = l.adjusts_period), l.period_end))
        and l.customer = 'tap-mc-a' and l.period = '2025-06'$$,
    'every June line (usage and adjustment) matches the documented recomputation over its period');

select results_eq(
    $$select meter, kind, idempotency_key, adjusted_on from meter.late_after_close
      where customer like 'tap-mc-%' order by meter, kind$$,
    $$values ('tap.mc.bytes'::text, 'cancellation'::text, 'a-B2'::text, '2025-06'::text),
             ('tap.mc.calls', 'event', 'a-c-late', '2025-06'),
             ('tap.mc.peak', 'cancellation', 'a-p-late', '2025-06'),
             ('tap.mc.peak', 'event', 'a-p-late', '2025-06')$$,
    'late_after_close: every row is adjusted on 2025-06, the late event cancelled again too (it moved '
    'nothing, so it needed no line)');
select results_eq(
    $$select meter, raw_events, raw_quantity, duplicates_rejected, late_after_close, rollup_quantity,
             invoiced_quantity, invoiced_amount, expected_amount, difference, status
      from recon where customer = 'tap-mc-a' and period = '2025-05' order by meter$$,
    $$values ('tap.mc.bytes'::text, 2::bigint, 2.500001::numeric, 0::bigint, 1::bigint, 2.500001::numeric,
              2.500001::numeric, 100::numeric, 100::numeric, 0::numeric, 'MATCH'::text),
             ('tap.mc.calls', 6, 6, 2, 1, 6, 6, 3, 3, 0, 'MATCH'),
             ('tap.mc.peak', 3, 9, 0, 2, 9, 9, 83, 83, 0, 'MATCH'),
             ('tap.mc.users', 6, 3, 0, 0, 3, 3, 260, 260, 0, 'MATCH')$$,
    'reconciliation of tap-mc-a 2025-05 is back to MATCH: raw events (net of cancellations; distinct users), '
    'duplicates rejected (two of a-c-1: not the conflict, not April''s), invoiced = usage line + adjustment '
    '= rollup quantity, difference 0');
select results_eq(
    $$select meter, invoiced_quantity, invoiced_amount, status from recon
      where customer = 'tap-mc-a' and period = '2025-06' order by meter$$,
    $$values ('tap.mc.bytes'::text, 0::numeric, 0::numeric, 'MATCH'::text), ('tap.mc.calls', 2, 1, 'MATCH'),
             ('tap.mc.peak', 0, 0, 'MATCH'), ('tap.mc.users', 0, 0, 'MATCH')$$,
    '2025-06 reconciles on its usage lines alone (its adjustments belong to 2025-05)');

select pg_temp.ref_expect('2025-07', 'tap-mc-a');
select results_eq(
    $$select period, outcome, lines, total from meter.period_close('2025-07', 'tap-mc-a')$$,
    $$values ('2025-07'::text, 'closed'::text, 4, 0::bigint)$$,
    'tap-mc-a closes 2025-07: four usage lines, nothing more');
select is_empty($$select * from pg_temp.ref_differences(pg_temp.invoices_of('tap-mc-a', '2025-07'))$$,
                'tap-mc-a 2025-07: the set-based close wrote exactly the lines of the per-customer pricing (support/close_reference.sql)');
select results_eq(
    $$select period, pg_catalog.count(*) from lines
      where customer = 'tap-mc-a' and kind = 'adjustment' group by period order by period$$,
    $$values ('2025-06'::text, 2::bigint)$$,
    'no new adjustment for 2025-05 on 2025-07 (already adjusted): the two adjustments are on 2025-06');
select is_empty(
    $$select 1 from meter.late_after_close where customer like 'tap-mc-%' and adjusted_on is distinct from '2025-06'$$,
    'late_after_close still names 2025-06');

-- tap-mc-rec: closing 2025-06 exactly at its end + grace adjusts 2025-05 for r-5.
select throws_ok(
    $$select * from meter.period_close('2025-06', 'tap-mc-rec',
                                       pg_catalog.now() - '2025-07-01 00:00+00'::timestamptz + interval '1 microsecond')$$,
    '55000', null, 'a grace ending one microsecond after now refuses the close');
select results_eq(
    $$select outcome, lines, total, currency
      from meter.period_close('2025-06', 'tap-mc-rec', pg_catalog.now() - '2025-07-01 00:00+00'::timestamptz)$$,
    $$values ('closed'::text, 2, 2::bigint, 'eur'::text)$$,
    'a grace ending exactly now closes; the invoice holds June''s zero line and the 2025-05 adjustment');
select results_eq(
    $$select kind, adjusts_period, event_count, quantity, amount from lines
      where customer = 'tap-mc-rec' and period = '2025-06' order by line_no$$,
    $$values ('usage'::text, null::text, 0::bigint, 0::numeric, 0::bigint), ('adjustment', '2025-05', 1, 1, 2)$$,
    'the adjustment for r-5: +1 event, +1, +2');
select results_eq(
    $$select invoiced_quantity, invoiced_amount, difference, status from recon where customer = 'tap-mc-rec' and period = '2025-05'$$,
    $$values (4::numeric, 8::numeric, 0::numeric, 'MATCH'::text)$$,
    'and tap-mc-rec 2025-05 reconciles again');

-- tap-mc-pend: the cancellation is rolled up; an event of this transaction is past the watermark.
select results_eq(
    $$select outcome, lines, total from meter.period_close('2025-08', 'tap-mc-pend')$$,
    $$values ('closed'::text, 1, 0::bigint)$$,
    'tap-mc-pend closes 2025-08 once the cancellation is rolled up (its only event cancelled: 0)');
select pg_temp.put_before_close('tap-mc-pend', 'tap.mc.calls', 'pd-2', '2025-09-10 10:00+00', 1, '{}', pg_catalog.pg_current_xact_id(),
                   pg_catalog.now());
select throws_ok($$select * from meter.period_close('2025-09', 'tap-mc-pend')$$, '55000',
                 'events of customer tap-mc-pend before 2025-10-01 00:00:00+00 are not rolled up yet',
                 'an event of the period not rolled up yet (this transaction''s own) refuses the close (55000)');
select results_eq(
    $$select outcome from meter.period_close('2025-08', 'tap-mc-pend')$$,
    $$values ('already_closed'::text)$$,
    'a later period''s pending event does not concern the closed 2025-08');

-- tap-mc-rec: an event of 2025-05 committed after the last rollup run (this transaction's own).
select pg_temp.put_before_close('tap-mc-rec', 'tap.mc.calls', 'r-6', '2025-05-10 13:00+00', 1, '{}', pg_catalog.pg_current_xact_id(),
                   pg_catalog.now());
select results_eq(
    $$select raw_events, raw_quantity, rollup_quantity, late_after_close, status
      from recon where customer = 'tap-mc-rec' and period = '2025-05'$$,
    $$values (5::bigint, 5::numeric, 4::numeric, 1::bigint, 'MISMATCH: rollup differs from raw events'::text)$$,
    'an event not rolled up (raw events are the ledger''s plus those stored and not folded): MISMATCH: rollup differs from raw events; '
    'r-5 (folded after the close, adjusted since) stays counted late');

-- ---------------------------------------------------------------------------------------------
-- Function properties.
-- ---------------------------------------------------------------------------------------------
select volatility_is('meter', 'period_close', array['text', 'text', 'interval', 'text[]']::name[], 'volatile',
                     'period_close is VOLATILE');
select isnt_definer('meter', 'period_close', array['text', 'text', 'interval', 'text[]']::name[],
                    'period_close runs with its caller''s rights');
select results_eq(
    $$select tgname::text collate "default", tgenabled::text from pg_catalog.pg_trigger
      where tgrelid in ('meter.invoices'::regclass, 'meter.invoice_lines'::regclass) and not tgisinternal order by tgname$$,
    $$values ('invoice_lines_added'::text, 'O'::text), ('invoice_lines_frozen', 'O'), ('invoice_lines_no_truncate', 'O'), ('invoices_frozen', 'O'),
             ('invoices_no_truncate', 'O')$$,
    'the freezing triggers are enabled');

select * from finish();
rollback;
