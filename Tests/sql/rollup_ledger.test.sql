-- The rollup's ledger (0023_rollup_ledger, decision 123) and the reconciliation that reads it:
--   * meter.rollup_run counts, per customer, meter, hour and dimension values, the events it
--     folds (Σ value, Σ of their keys' hashes), the cancellations it subtracts, the redeliveries
--     acknowledged as duplicates, and what it folds into a period already closed (late); each
--     figure is checked here against a recomputation straight from the raw tables;
--   * meter.reconciliation reads the ledger (and the few rows not folded yet), not raw events: its
--     rows for a closed month, per invoice line (a meter priced per filter included);
--   * meter.reconciliation_verify, the separate recomputation from raw events, is empty while
--     the accounts agree, and names the figure when a rollup row or a raw event is altered;
--   * the ledger's period rows (meter.rollup_ledger_period, 0024, decision 124) are Σ of the raw
--     tables per period, a whole period's line reads them and equals its hours, and
--     meter.rollup_ledger_period_verify and meter.rollup_period_rebuild find and repair a fault.
--
-- Emulated history as in month_close.test.sql: events of long-finished transactions (xid 100,
-- then 200 for those committed after the first run); the suite runs on a freshly migrated database.
begin;
select plan(27);
\ir support/fixtures.sql

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
update meter.rollup_watermark set position_xid = '0', position_id = 0, redeliveries_xid = '0', redeliveries_id = 0;

create temp table fx as
select meter.customer_upsert('tap-lg-a') as cust,
       meter.meter_upsert('tap.lg.calls', 'count') as m_calls,
       meter.meter_upsert('tap.lg.bytes', 'sum') as m_bytes,
       meter.meter_upsert('tap.lg.peak', 'max') as m_peak,
       meter.meter_upsert('tap.lg.tokens', 'sum', null, null, null, null, array['model']) as m_tokens,
       meter.plan_upsert('tap-lg-plan', 'usd') as plan;
select meter.customer_subscribe('tap-lg-a', 'tap-lg-plan', '2024-05');
select meter.plan_price_set('tap-lg-plan', 'tap.lg.calls', 'per_unit', 2);
select meter.plan_price_set('tap-lg-plan', 'tap.lg.bytes', 'per_unit', 1);
select meter.plan_price_set('tap-lg-plan', 'tap.lg.peak', 'per_unit', 10);
select meter.plan_price_set('tap-lg-plan', 'tap.lg.tokens', 'per_unit', 3, null, null, '{"model": "a"}');
select meter.plan_price_set('tap-lg-plan', 'tap.lg.tokens', 'per_unit', 1);

-- May 2024, received three hours ago (before the close below).
create function pg_temp.put_may(p_meter text, p_key text, p_at timestamptz, p_value numeric default 1,
                                p_properties jsonb default '{}', p_xid xid8 default '100',
                                p_received_at timestamptz default pg_catalog.now() - interval '3 hours')
returns bigint language sql
as $$ select pg_temp.put('tap-lg-a', p_meter, p_key, p_at, p_value, p_properties, p_xid, p_received_at) $$;
select pg_temp.put_may('tap.lg.calls', 'c-1', '2024-05-02 10:05+00');
select pg_temp.put_may('tap.lg.calls', 'c-2', '2024-05-02 10:55+00');
select pg_temp.put_may('tap.lg.calls', 'c-3', '2024-05-03 07:00+00');
select pg_temp.put_may('tap.lg.bytes', 'b-1', '2024-05-02 10:10+00', 7.5);
select pg_temp.put_may('tap.lg.bytes', 'b-2', '2024-05-02 10:20+00', 2.25);
select pg_temp.put_may('tap.lg.bytes', 'b-3', '2024-05-20 23:59+00', 100);
select pg_temp.put_may('tap.lg.peak', 'p-1', '2024-05-02 10:00+00', 5);
select pg_temp.put_may('tap.lg.peak', 'p-2', '2024-05-09 10:00+00', 9);
select pg_temp.put_may('tap.lg.tokens', 't-a1', '2024-05-02 10:00+00', 40, '{"model": "a"}');
select pg_temp.put_may('tap.lg.tokens', 't-a2', '2024-05-02 10:30+00', 60, '{"model": "a"}');
select pg_temp.put_may('tap.lg.tokens', 't-b1', '2024-05-02 10:40+00', 5, '{"model": "b"}');
select pg_temp.put_may('tap.lg.tokens', 't-n1', '2024-05-02 11:40+00', 3);
-- Redeliveries as ingest records them (a long-finished transaction, the event's time): two
-- duplicates of t-a1, one of c-1, a conflict of b-1 (not counted).
insert into meter.event_redeliveries (event_id, verdict, occurred_at, xid, customer_id)
select e.id, k.verdict, e.occurred_at, '100', e.customer_id
from (values ('t-a1', 'duplicate'), ('t-a1', 'duplicate'), ('c-1', 'duplicate'), ('b-1', 'conflict')) as k(key, verdict)
join meter.events e on e.idempotency_key = k.key;
select results_eq($$select status from meter.event_cancel(
                      '[{"customer": "tap-lg-a", "idempotency_key": "b-2"}, {"customer": "tap-lg-a", "idempotency_key": "t-b1"}]')$$,
                  $$values ('cancelled'::text), ('cancelled')$$, 'setup: b-2 and t-b1 are cancelled');
select results_eq($$select ran, events_folded, cancellations_folded from meter.rollup_run()$$,
                  $$values (true, 12::bigint, 2::bigint)$$, 'rollup run 1 folds the 12 events and the 2 cancellations');

-- The ledger recomputed straight from the raw tables, per meter, hour and dimension values.
create temp view ledger_now as
select m.code as meter, l.hour, l.dims::text as dims, l.events, l.cancelled, l.duplicates, l.late,
       l.value_in, l.value_out, l.key_checksum
from meter.rollup_ledger l join meter.meters m on m.id = l.meter_id
where l.customer_id = (select cust from fx);
create temp view ledger_from_raw as
select m.code as meter, date_trunc('hour', e.occurred_at, 'UTC') as hour,
       case when m.code = 'tap.lg.tokens' then jsonb_build_object('model', e.properties ->> 'model')::text else '{}' end as dims,
       count(*) as events, count(x.event_id) as cancelled,
       (select count(*) from meter.event_redeliveries r where r.verdict = 'duplicate'
          and r.event_id = any (array_agg(e.id))) as duplicates,
       sum(e.value) as value_in, coalesce(sum(e.value) filter (where x.event_id is not null), 0) as value_out,
       sum(hashtextextended(e.idempotency_key, 0)) - coalesce(sum(hashtextextended(e.idempotency_key, 0)) filter (where x.event_id is not null), 0)
           as key_checksum
from meter.events e join meter.meters m on m.id = e.meter_id
left join meter.event_cancellations x on x.event_id = e.id
where e.customer_id = (select cust from fx)
group by 1, 2, 3;

select set_eq(
    $$select meter, hour, dims, events, cancelled, duplicates, value_in, value_out, key_checksum from ledger_now$$,
    $$select meter, hour, dims, events, cancelled, duplicates, value_in, value_out, key_checksum from ledger_from_raw$$,
    'the ledger holds, per meter, hour and dimension values, the events, cancellations, duplicates, Σ value in and out and key checksum of the raw tables');
select is((select sum(late) from ledger_now), 0::numeric, 'nothing was folded into a closed period: late 0 everywhere');
select results_eq(
    $$select redeliveries_total from meter.rollup_watermark$$, $$values (4::bigint)$$,
    'the four redeliveries were taken (the conflict is not counted as a duplicate)');

-- ---------------------------------------------------------------------------------------------
-- The close, and the reconciliation from the ledger.
-- ---------------------------------------------------------------------------------------------
select results_eq($$select outcome, lines from meter.period_close('2024-05', 'tap-lg-a')$$,
                  $$values ('closed'::text, 5)$$, 'May closes with five usage lines (tokens: model a, the rest)');
update meter.invoices set closed_at = pg_catalog.now() - interval '2 hours' where customer_id = (select cust from fx);
select results_eq(
    $$select line, raw_events, raw_quantity::numeric, duplicates_rejected, cancelled_events, late_after_close,
             rollup_quantity::numeric, invoiced_quantity::numeric, invoiced_amount::bigint, status
      from meter.reconciliation where customer = 'tap-lg-a' and period = '2024-05' order by line collate "C"$$,
    $$values ('tap.lg.bytes'::text, 2::bigint, 107.5::numeric, 0::bigint, 1::bigint, 0::bigint, 107.5::numeric, 107.5::numeric, 108::bigint, 'MATCH'::text),
             ('tap.lg.calls', 3, 3, 1, 0, 0, 3, 3, 6, 'MATCH'),
             ('tap.lg.peak', 2, 9, 0, 0, 0, 9, 9, 90, 'MATCH'),
             ('tap.lg.tokens [model=a]', 2, 100, 2, 0, 0, 100, 100, 300, 'MATCH'),
             ('tap.lg.tokens [other]', 1, 3, 0, 1, 0, 3, 3, 3, 'MATCH')$$,
    'the reconciliation from the ledger: events net of cancellations, quantities, duplicates and cancellations per line (t-b1 on the default line)');
select is_empty($$select * from meter.reconciliation_verify('2024-05')$$,
                'reconciliation_verify recomputes every line from raw events: nothing differs');

-- ---------------------------------------------------------------------------------------------
-- After the close: a late event (committed after run 1) and a late cancellation.
-- ---------------------------------------------------------------------------------------------
update meter.rollup_watermark set position_xid = '200', position_id = 0;
select pg_temp.put_may('tap.lg.calls', 'c-late', '2024-05-25 10:00+00', 1, '{}', '200', pg_catalog.now() - interval '1 hour');
select pg_temp.put_may('tap.lg.tokens', 't-late', '2024-05-20 10:00+00', 10, '{"model": "a"}', '200', pg_catalog.now() - interval '1 hour');
select results_eq($$select status from meter.event_cancel('[{"customer": "tap-lg-a", "idempotency_key": "b-3"}]')$$,
                  $$values ('cancelled'::text)$$, 'setup: b-3 is cancelled after the close');
select results_eq(
    $$select line, raw_events, raw_quantity::numeric, late_after_close, rollup_quantity::numeric, status
      from meter.reconciliation where customer = 'tap-lg-a' and period = '2024-05' and line in ('tap.lg.bytes', 'tap.lg.calls')
      order by line collate "C"$$,
    $$values ('tap.lg.bytes'::text, 1::bigint, 7.5::numeric, 1::bigint, 107.5::numeric, 'MISMATCH: late-after-close not adjusted yet'::text),
             ('tap.lg.calls', 4, 4, 1, 3, 'MISMATCH: late-after-close not adjusted yet')$$,
    'not folded yet, the late event and cancellation count in raw figures and as late (arrived after the close)');
select results_eq(
    $$select line, raw_events, raw_quantity::numeric, late_after_close, rollup_quantity::numeric, status
      from meter.reconciliation where customer = 'tap-lg-a' and period = '2024-05' and line like 'tap.lg.tokens%'
      order by line collate "C"$$,
    $$values ('tap.lg.tokens [model=a]'::text, 3::bigint, 110::numeric, 1::bigint, 100::numeric, 'MISMATCH: late-after-close not adjusted yet'::text),
             ('tap.lg.tokens [other]', 1, 3, 0, 3, 'MATCH')$$,
    'a row not folded yet counts on the line its dimension values are priced on, not on the others');
select is_empty($$select * from meter.reconciliation_verify('2024-05')$$,
                'before the rollup catches up, reconciliation_verify still agrees: it compares what was folded');
select results_eq($$select events_folded, cancellations_folded from meter.rollup_run()$$,
                  $$values (2::bigint, 1::bigint)$$, 'rollup run 2 folds them');
select results_eq(
    $$select meter, sum(late)::bigint from ledger_now group by meter having sum(late) > 0 order by meter$$,
    $$values ('tap.lg.bytes'::text, 1::bigint), ('tap.lg.calls', 1::bigint), ('tap.lg.tokens', 1::bigint)$$,
    'folded into a closed period, each is counted late in its hour''s ledger row');
select results_eq(
    $$select line, raw_events, raw_quantity::numeric, late_after_close, rollup_quantity::numeric, status
      from meter.reconciliation where customer = 'tap-lg-a' and period = '2024-05' and line in ('tap.lg.bytes', 'tap.lg.calls')
      order by line collate "C"$$,
    $$values ('tap.lg.bytes'::text, 1::bigint, 7.5::numeric, 1::bigint, 7.5::numeric, 'MISMATCH: late-after-close not adjusted yet'::text),
             ('tap.lg.calls', 4, 4, 1, 4, 'MISMATCH: late-after-close not adjusted yet')$$,
    'folded: the rollups moved past the invoice, which no close has adjusted yet');

-- The ledger's period rows (0024, decision 124): Σ of the hours, recomputed here from the raw
-- tables (the customer bills in UTC: its period is the UTC month), late folds included.
select set_eq(
    $$select m.code, p.period_start, p.dims::text, p.events, p.cancelled, p.duplicates, p.late, p.value_in, p.value_out, p.key_checksum
      from meter.rollup_ledger_period p join meter.meters m on m.id = p.meter_id
      where p.customer_id = (select cust from fx)$$,
    $$select r.meter, date_trunc('month', r.hour, 'UTC') as period_start, r.dims, sum(r.events)::bigint as events,
             sum(r.cancelled)::bigint as cancelled, sum(r.duplicates)::bigint as duplicates, coalesce(sum(n.late), 0)::bigint as late,
             sum(r.value_in) as value_in, sum(r.value_out) as value_out, sum(r.key_checksum) as key_checksum
      from ledger_from_raw r
      left join ledger_now n on n.meter = r.meter and n.hour = r.hour and n.dims = r.dims
      group by 1, 2, 3$$,
    'rollup_ledger_period: per meter, period and dimension values, Σ of the raw tables'' events, cancellations, duplicates, late folds, values and key checksums');
select is_empty($$select * from meter.rollup_ledger_period_verify()$$, 'rollup_ledger_period_verify: every period row is Σ of its hours');
-- A line read from the period's rows (a whole billing period) equals the same line read from its
-- hours (the range split in two, which is no billing period).
select results_eq(
    $$select l.events, l.cancelled, l.duplicates, l.late, l.value, l.key_checksum
      from meter._line_ledger((select cust from fx), (select m_tokens from fx), '2024-05-01 00:00+00', '2024-06-01 00:00+00', (select plan from fx), '{"model": ["a"]}') l$$,
    $$select sum(l.events)::bigint as events, sum(l.cancelled)::bigint as cancelled, sum(l.duplicates)::bigint as duplicates,
             sum(l.late)::bigint as late, sum(l.value) as value, sum(l.key_checksum) as key_checksum
      from (select * from meter._line_ledger((select cust from fx), (select m_tokens from fx), '2024-05-01 00:00+00', '2024-05-15 00:00+00', (select plan from fx), '{"model": ["a"]}')
            union all
            select * from meter._line_ledger((select cust from fx), (select m_tokens from fx), '2024-05-15 00:00+00', '2024-06-01 00:00+00', (select plan from fx), '{"model": ["a"]}')) l$$,
    '_line_ledger of a whole period (rollup_ledger_period) equals its two halves (rollup_ledger hours)');
update meter.rollup_ledger_period set events = events + 100
where customer_id = (select cust from fx) and meter_id = (select m_tokens from fx) and dims = '{"model": "a"}';
select results_eq(
    $$select (select l.events from meter._line_ledger((select cust from fx), (select m_tokens from fx), '2024-05-01 00:00+00', '2024-06-01 00:00+00', (select plan from fx), '{"model": ["a"]}') l)
           - (select sum(l.events) from (select * from meter._line_ledger((select cust from fx), (select m_tokens from fx), '2024-05-01 00:00+00', '2024-05-15 00:00+00', (select plan from fx), '{"model": ["a"]}')
                                         union all
                                         select * from meter._line_ledger((select cust from fx), (select m_tokens from fx), '2024-05-15 00:00+00', '2024-06-01 00:00+00', (select plan from fx), '{"model": ["a"]}')) l)$$,
    $$values (100::numeric)$$,
    'the whole period is read from rollup_ledger_period (a period row altered by 100 moves it by 100, not the halves)');
update meter.rollup_ledger_period set events = events - 100
where customer_id = (select cust from fx) and meter_id = (select m_tokens from fx) and dims = '{"model": "a"}';
-- Faults in the period rows are listed, and the rebuild repairs them.
update meter.rollup_ledger_period set duplicates = duplicates + 1
where customer_id = (select cust from fx) and meter_id = (select m_calls from fx);
select results_eq(
    $$select period_start, (period ->> 'duplicates')::bigint - (hours ->> 'duplicates')::bigint from meter.rollup_ledger_period_verify()$$,
    $$values ('2024-05-01 00:00+00'::timestamptz, 1::bigint)$$,
    'rollup_ledger_period_verify names a period row that differs from its hours');
select ok(meter.rollup_period_rebuild((select cust from fx)) > 0, 'rollup_period_rebuild rewrites the customer''s period rows');
select is_empty($$select * from meter.rollup_ledger_period_verify()$$, 'after the rebuild, rollup_ledger_period_verify is empty again');

-- ---------------------------------------------------------------------------------------------
-- Faults: the two accounts disagree.
-- ---------------------------------------------------------------------------------------------
-- (a fold gone wrong: the hour's row and its period total, which the line reads, both 5 over)
update meter.rollup_hourly_dims set quantity = quantity + 5
where customer_id = (select cust from fx) and meter_id = (select m_tokens from fx) and hour = '2024-05-02 11:00+00'
  and dims = '{"model": null}';
update meter.rollup_period_dims set quantity = quantity + 5
where customer_id = (select cust from fx) and meter_id = (select m_tokens from fx) and period_start = '2024-05-01 00:00+00'
  and dims = '{"model": null}';
select results_eq(
    $$select status from meter.reconciliation where customer = 'tap-lg-a' and period = '2024-05' and line = 'tap.lg.tokens [other]'$$,
    $$values ('MISMATCH: rollup differs from raw events'::text)$$,
    'a rollup row altered: the ledger and the rollup disagree (MISMATCH: rollup differs from raw events)');
select results_eq(
    $$select line, figure, ledger, raw from meter.reconciliation_verify('2024-05')$$,
    $$values ('tap.lg.tokens [other]'::text, 'quantity (rollup)'::text, 8::numeric, 3::numeric)$$,
    'reconciliation_verify names the line and the figure: the rollup''s quantity against raw events');
update meter.rollup_hourly_dims set quantity = quantity - 5
where customer_id = (select cust from fx) and meter_id = (select m_tokens from fx) and hour = '2024-05-02 11:00+00'
  and dims = '{"model": null}';
update meter.rollup_period_dims set quantity = quantity - 5
where customer_id = (select cust from fx) and meter_id = (select m_tokens from fx) and period_start = '2024-05-01 00:00+00'
  and dims = '{"model": null}';
update meter.events set value = 8 where idempotency_key = 'b-1';
select results_eq(
    $$select line, figure, ledger, raw from meter.reconciliation_verify('2024-05') order by figure$$,
    $$values ('tap.lg.bytes'::text, 'quantity (rollup)'::text, 7.5::numeric, 8::numeric),
             ('tap.lg.bytes', 'value', 7.5, 8)$$,
    'a raw event altered after it was folded: the ledger''s Σ value and the rollup''s quantity both differ from raw events');

-- Ingest records a duplicate with its event's time (the ledger's fold finds the event by it).
create temp table again as select * from meter.event_ingest(
    '[{"customer": "tap-lg-a", "meter": "tap.lg.calls", "idempotency_key": "c-3", "occurred_at": "2024-05-03T07:00:00Z"}]',
    interval '5 minutes', interval '10 years');
select results_eq(
    $$select a.status, r.occurred_at from again a join meter.event_redeliveries r on r.event_id = a.event_id and r.verdict = 'duplicate'$$,
    $$values ('duplicate'::text, '2024-05-03 07:00+00'::timestamptz)$$,
    'a redelivery through meter.event_ingest is recorded with its event''s occurred_at');

select * from finish();
rollback;
