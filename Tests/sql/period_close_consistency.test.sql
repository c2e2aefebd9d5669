-- meter.period_close: a line's event count, quantity and events_hash describe the same events,
-- even when an event of the period commits while the close runs. The close reads the quantity
-- from the rollups and the hash from raw events; an event committed in between (here: inserted
-- by a trigger on meter.invoices, so that the close's later statements see it, as they would see
-- another session's commit under READ COMMITTED) was in the hash and not in the quantity. The
-- hash now covers the events the rollups hold (below the watermark, cancellations subtracted),
-- and the close holds the rollup lock, so no rollup run moves them meanwhile.
-- Emulated history as in rollup_run.test.sql (explicit xids of finished transactions).
begin;
select plan(4);
\ir support/fixtures.sql

update meter.rollup_watermark set position_xid = '0', position_id = 0;
select meter.customer_upsert('tap-pc-a'), meter.meter_upsert('tap.pc.calls');
select meter.plan_upsert('tap-pc-plan', 'usd', 'Consistency');
select meter.plan_price_set('tap-pc-plan', 'tap.pc.calls', 'per_unit', 1);
select meter.customer_subscribe('tap-pc-a', 'tap-pc-plan', '2025-03');
select pg_temp.put('tap-pc-a', 'tap.pc.calls', 'k' || i, '2025-03-10 10:00+00'::timestamptz + i * interval '1 minute', 1, '{}', '100',
                   '2025-03-10 12:00+00') from pg_catalog.generate_series(1, 5) i;
select results_eq($$select events_folded from meter.rollup_run()$$, $$values (5::bigint)$$, 'five events rolled up');

-- "Another session" commits a late event of March while the close runs.
create function pg_temp.late_event() returns trigger language plpgsql as $$
begin
    perform pg_temp.put('tap-pc-a', 'tap.pc.calls', 'late', '2025-03-20 10:00+00', 1, '{}', pg_catalog.pg_current_xact_id());
    return new;
end $$;
create trigger tap_pc_late after insert on meter.invoices for each row execute function pg_temp.late_event();

select is((select outcome from meter.period_close('2025-03', 'tap-pc-a', interval '0')), 'closed', 'March closed');
select results_eq(
    $$select l.event_count, l.quantity from meter.invoice_lines l join meter.invoices i on i.id = l.invoice_id
      join meter.customers c on c.id = i.customer_id where c.external_id = 'tap-pc-a' and l.kind = 'usage'$$,
    $$values (5::bigint, 5::numeric)$$, 'the line counts the five rolled-up events');
select is(
    (select l.events_hash from meter.invoice_lines l join meter.invoices i on i.id = l.invoice_id
      join meter.customers c on c.id = i.customer_id where c.external_id = 'tap-pc-a' and l.kind = 'usage'),
    (select pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(coalesce(pg_catalog.string_agg(
                e.idempotency_key || E'\t' || e.value::text, E'\n' order by e.idempotency_key collate "C"), ''), 'UTF8')), 'hex')
     from meter.events e join meter.customers c on c.id = e.customer_id
     where c.external_id = 'tap-pc-a' and e.idempotency_key <> 'late'),
    'and its hash is the hash of those five, not of the late one committed meanwhile');

select * from finish();
rollback;
