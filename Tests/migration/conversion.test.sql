-- Migration 0021 on a database holding events (Tests/migration/conversion_test.sh built it with
-- the product before 0021 and kept copies in schema conv): the events, their keys, cancellations,
-- redeliveries, rollups and watermark mean what they meant; every verdict is as before; the
-- rollup goes on from where it stood.
begin;
select plan(17);

select is((select c.relkind::text from pg_catalog.pg_class c where c.oid = 'meter.events'::regclass), 'p',
          'meter.events is partitioned after the migration');
select is((select pg_catalog.count(*) from conv.events), 3100::bigint, 'setup: 3,100 events before the migration');
select set_eq(
    $$select id, customer_id, meter_id, idempotency_key, occurred_at, received_at, value::text, properties, xid::text from meter.events$$,
    $$select id, customer_id, meter_id, idempotency_key, occurred_at, received_at, value::text, properties, xid::text from conv.events$$,
    'every event is there, every column as it was (id, xid and value''s scale included), and no other');
select set_eq(
    $$select customer_id, idempotency_key, event_id, occurred_at from meter.event_keys where archived_digest is null$$,
    $$select customer_id, idempotency_key, id, occurred_at from conv.events$$,
    'meter.event_keys holds each event''s key with its id and occurred_at, and nothing else');
select is_empty(
    $$select 1 from meter.events e join pg_catalog.pg_class c on c.oid = e.tableoid
      where c.relname <> 'events_' || pg_catalog.to_char(e.occurred_at at time zone 'UTC', 'YYYY_MM')$$,
    'each event sits in its UTC month''s partition');
select set_eq($$select * from meter.event_cancellations$$, $$select * from conv.cancellations$$,
              'cancellations unchanged');
select set_eq($$select id, event_id, verdict, received_at, offered from meter.event_redeliveries$$,
              $$select id, event_id, verdict, received_at, offered from conv.redeliveries$$,
              'redeliveries unchanged');
select is_empty(
    $$select 1 from meter.event_cancellations x where not exists (select 1 from meter.events e where e.id = x.event_id)
      union all
      select 1 from meter.event_redeliveries r where not exists (select 1 from meter.events e where e.id = r.event_id)$$,
    'every cancellation and redelivery still finds its event by id');
select set_eq($$select * from meter.rollup_hourly$$, $$select * from conv.rollup_hourly$$, 'rollups unchanged');
select set_eq($$select name, position_xid, position_id, updated_at, runs_total, events_total, cancellations_total,
                      last_run_at, last_run_events, last_run_cancellations, last_run_hours, last_run_ms
               from meter.rollup_watermark$$,
              $$select * from conv.watermark$$, 'the watermark unchanged (its columns before 0023''s redeliveries position)');

-- Verdicts after the conversion.
create temp table after as
select * from meter.event_ingest(
    '[{"customer": "conv-b", "meter": "conv.calls", "idempotency_key": "k-1", "occurred_at": "2026-09-01T00:37:00Z", "value": "1.5", "properties": {"n": 1}},
      {"customer": "conv-a", "meter": "conv.calls", "idempotency_key": "k-2", "occurred_at": "2026-09-01T01:14:00Z", "value": "3", "properties": {"n": 2}},
      {"customer": "conv-a", "meter": "conv.calls", "idempotency_key": "k-new", "occurred_at": "2026-11-20T00:00:00Z"}]'::jsonb,
    interval '5 minutes', interval '3 years');
select results_eq(
    $$select status, event_id from after order by ord$$,
    $$values ('duplicate'::text, (select id from conv.events where idempotency_key = 'k-1')),
             ('conflict', (select id from conv.events where idempotency_key = 'k-2')),
             ('accepted', (select id from meter.events where idempotency_key = 'k-new'))$$,
    'a retry of a converted event is a duplicate with its id, another content a conflict, a new key accepted');
select cmp_ok((select id from meter.events where idempotency_key = 'k-new'), '>', (select pg_catalog.max(id) from conv.events),
              'new ids continue after the converted ones');
-- The rollup goes on from its watermark: the 100 events and 5 cancellations pending before the
-- migration (this transaction's own writes wait for a later run: they are above the horizon).
select results_eq(
    $$select events_folded, cancellations_folded from meter.rollup_run()$$,
    $$values (100::bigint, 5::bigint)$$,
    'the first run after the migration folds exactly what was pending before it');
select is_empty($$select * from meter.rollup_verify('2026-09-01', '2026-12-01')$$,
                'rollup_verify finds no difference');
-- 0023's ledger: backfilled from the events folded before, the rest by that run, the stored
-- redeliveries by it too (this transaction's own duplicate waits, above the horizon).
select set_eq(
    $$select customer_id, meter_id, hour, sum(events)::bigint as events, sum(cancelled)::bigint as cancelled,
             sum(duplicates)::bigint as duplicates, sum(value_in - value_out) as value, sum(key_checksum) as checksum
      from meter.rollup_ledger group by 1, 2, 3 having sum(events) > 0$$,
    $$select e.customer_id, e.meter_id, date_trunc('hour', e.occurred_at, 'UTC') as hour,
             count(*) filter (where e.xid < pg_current_xact_id()) as events,
             count(*) filter (where x.rolled_up_at is not null) as cancelled,
             (select count(*) from meter.event_redeliveries r
              where r.verdict = 'duplicate' and r.xid < pg_current_xact_id() and r.event_id = any (array_agg(e.id))) as duplicates,
             coalesce(sum(e.value) filter (where e.xid < pg_current_xact_id() and x.rolled_up_at is null), 0) as value,
             coalesce(sum(hashtextextended(e.idempotency_key, 0)) filter (where e.xid < pg_current_xact_id() and x.rolled_up_at is null), 0) as checksum
      from meter.events e left join meter.event_cancellations x on x.event_id = e.id
      group by 1, 2, 3 having count(*) filter (where e.xid < pg_current_xact_id()) > 0$$,
    'the ledger (0023: backfilled, then folded) counts, hour by hour, the folded events, cancellations, duplicates, values and keys of the raw tables');
select results_eq(
    $$select status from meter.event_cancel('[{"customer": "conv-a", "idempotency_key": "k-40"},
                                              {"customer": "conv-a", "idempotency_key": "k-20"}]')$$,
    $$values ('cancelled'::text), ('already_cancelled')$$,
    'cancellations find converted events by key');

select is_empty(
    $$select 1 from meter.events e where not exists (
          select 1 from meter.event_keys k where k.customer_id = e.customer_id and k.idempotency_key = e.idempotency_key
            and k.event_id = e.id and k.occurred_at = e.occurred_at)$$,
    'every event, old and new, has its key');

select * from finish();
rollback;
