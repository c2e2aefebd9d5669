-- Closed history for the archive test (Tests/archive/archive_test.sh): three months of 2024
-- billed and closed, one customer west of nothing (UTC), one at UTC+14 (its periods cross UTC
-- months), one without a plan; a meter priced per filter of a dimension; cancellations; a late
-- event of May after May's close, adjusted on June's invoice.
\set ON_ERROR_STOP on
select count(*) from meter.events_partitions_ensure('2024-01-01', '2024-12-01');
select meter.customer_upsert('arc-utc'), meter.customer_upsert('arc-kiri', null, 'Pacific/Kiritimati'),
       meter.customer_upsert('arc-noplan');
select meter.meter_upsert('arc.calls'), meter.meter_upsert('arc.tokens', 'sum', null, null, null, null, array['model']);
select meter.plan_upsert('arc-plan', 'usd');
select meter.plan_price_set('arc-plan', 'arc.calls', 'per_unit', 0.25);
select meter.plan_price_set('arc-plan', 'arc.tokens', 'per_unit', 0.001, null, null, '{"model": "big"}');
select meter.plan_price_set('arc-plan', 'arc.tokens', 'per_unit', 0.0001);
select meter.customer_subscribe('arc-utc', 'arc-plan', '2024-04'), meter.customer_subscribe('arc-kiri', 'arc-plan', '2024-04');
-- arc.calls is billed in the engine too: its hours go through the billing outbox
select meter.billing_price_set('arc.calls', 'price_arc_calls', '2024-01-01');

-- 2,400 events from 2024-04-01 every 54 minutes (to early June), all three customers
select count(*) from meter.event_ingest(
    (select jsonb_agg(jsonb_build_object(
         'customer', (array['arc-utc', 'arc-kiri', 'arc-noplan'])[1 + g % 3],
         'meter', case when g % 2 = 0 then 'arc.tokens' else 'arc.calls' end,
         'idempotency_key', 'a-' || g,
         'occurred_at', timestamptz '2024-04-01 00:00+00' + g * interval '54 minutes',
         'value', case when g % 2 = 0 then (g % 997)::text else '1' end,
         'properties', case when g % 2 = 0 then jsonb_build_object('model', case when g % 4 = 0 then 'big' else 'small' end) else '{}' end))
     from generate_series(1, 2400) g),
    interval '5 minutes', interval '10 years');
select count(*) from meter.event_cancel(
    (select jsonb_agg(jsonb_build_object('customer', (array['arc-utc', 'arc-kiri', 'arc-noplan'])[1 + g % 3], 'idempotency_key', 'a-' || g))
     from generate_series(900, 910) g));
