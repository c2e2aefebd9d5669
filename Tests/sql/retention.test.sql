-- Retention (0009_retention, meter.retention_prune): a conflict's offered payload older than its
-- retention is cleared with its SHA-256 kept, newer ones and duplicates untouched; the redelivery
-- rows stay, so the reconciliation's duplicate count does not move; processed webhooks older
-- than theirs are deleted, unprocessed ones never; each pass does at most max_rows per table,
-- oldest first; retentions shorter than the floors are refused (22023).
begin;
select plan(16);
\ir support/fixtures.sql

select meter.customer_upsert('tap-rt'), meter.meter_upsert('tap.rt.calls', 'count');
select pg_temp.put('tap-rt', 'tap.rt.calls', 'rt-' || i, pg_catalog.now() - interval '100 days')
from pg_catalog.generate_series(1, 4) as i;
-- Conflicts of 200, 120 and 10 days ago; a duplicate of 200 days ago (no payload).
insert into meter.event_redeliveries (event_id, verdict, received_at, offered, customer_id)
select e.id, v.verdict, pg_catalog.now() - v.age, v.offered, e.customer_id
from (values ('rt-1', 'conflict', interval '200 days', '{"value": 7, "k": "old"}'::jsonb),
             ('rt-2', 'conflict', interval '120 days', '{"value": 8}'::jsonb),
             ('rt-3', 'conflict', interval '10 days',  '{"value": 9}'::jsonb),
             ('rt-4', 'duplicate', interval '200 days', null)) as v(key, verdict, age, offered)
join meter.events e on e.idempotency_key = v.key;
insert into meter.webhook_events (event_id, type, created, payload, received_at, processed_at, outcome)
values ('evt_rt_old1', 'invoice.paid', pg_catalog.now() - interval '100 days', '{}', pg_catalog.now() - interval '100 days',
        pg_catalog.now() - interval '100 days', 'applied'),
       ('evt_rt_old2', 'invoice.paid', pg_catalog.now() - interval '95 days', '{}', pg_catalog.now() - interval '95 days',
        pg_catalog.now() - interval '95 days', 'applied'),
       ('evt_rt_stuck', 'invoice.paid', pg_catalog.now() - interval '300 days', '{}', pg_catalog.now() - interval '300 days',
        null, null),
       ('evt_rt_new', 'invoice.paid', pg_catalog.now() - interval '2 days', '{}', pg_catalog.now() - interval '2 days',
        pg_catalog.now() - interval '2 days', 'applied');

create temp table before_counts as
select verdict, pg_catalog.count(*) as n from meter.event_redeliveries group by verdict;

-- Floors.
select throws_ok($$select * from meter.retention_prune(interval '90 days', interval '6 days')$$,
                 '22023', null, 'a webhook retention under 7 days is refused (the engine redelivers for up to 3)');
select throws_ok($$select * from meter.retention_prune(interval '1 hour', interval '90 days')$$,
                 '22023', null, 'a conflict-payload retention under 1 day is refused');
select throws_ok($$select * from meter.retention_prune(interval '90 days', interval '90 days', 0)$$,
                 '22023', null, 'max_rows must be positive');

-- One pass of one row per table: the oldest of each goes first.
select results_eq($$select target, pruned from meter.retention_prune(interval '90 days', interval '90 days', 1)$$,
                  $$values ('event_redeliveries.offered', 1::bigint), ('webhook_events', 1::bigint)$$,
                  'max_rows bounds a pass: one row of each table');
select is((select r.offered from meter.event_redeliveries r join meter.events e on e.id = r.event_id
           where e.idempotency_key = 'rt-1'), null, 'the oldest conflict''s payload went first');
select is((select r.offered_sha256 from meter.event_redeliveries r join meter.events e on e.id = r.event_id
           where e.idempotency_key = 'rt-1'),
          pg_catalog.sha256(pg_catalog.convert_to('{"value": 7, "k": "old"}'::jsonb::text, 'UTF8')),
          '... and its SHA-256 is kept, so a resend can still be matched');
select isnt((select r.offered_pruned_at from meter.event_redeliveries r join meter.events e on e.id = r.event_id
             where e.idempotency_key = 'rt-1'), null, '... with the time it was pruned');
select is_empty($$select 1 from meter.webhook_events where event_id = 'evt_rt_old1'$$,
                'the oldest processed webhook went first');
select isnt_empty($$select 1 from meter.webhook_events where event_id = 'evt_rt_old2'$$, '... and only it');

-- The next pass takes the rest that is due, and nothing else.
select results_eq($$select target, pruned from meter.retention_prune(interval '90 days', interval '90 days')$$,
                  $$values ('event_redeliveries.offered', 1::bigint), ('webhook_events', 1::bigint)$$,
                  'the next pass takes what is still due');
select is((select r.offered from meter.event_redeliveries r join meter.events e on e.id = r.event_id
           where e.idempotency_key = 'rt-3'), '{"value": 9}'::jsonb, 'a conflict within its retention keeps its payload');
select is((select r.offered_sha256 from meter.event_redeliveries r join meter.events e on e.id = r.event_id
           where e.idempotency_key = 'rt-3'), null, '... and has no hash yet');
select set_eq($$select event_id from meter.webhook_events where event_id like 'evt_rt_%'$$,
              array['evt_rt_stuck', 'evt_rt_new'],
              'an unprocessed webhook is never pruned, whatever its age; a recent one stays');
select results_eq($$select target, pruned from meter.retention_prune(interval '90 days', interval '90 days')$$,
                  $$values ('event_redeliveries.offered', 0::bigint), ('webhook_events', 0::bigint)$$,
                  'then a pass has nothing left to do');

-- The audit rows stay: the counts the reconciliation reads do not move.
select set_eq($$select verdict, pg_catalog.count(*) from meter.event_redeliveries group by verdict$$,
              $$select verdict, n from before_counts$$,
              'every redelivery row is kept (the reconciliation counts them)');
select is((select pg_catalog.count(*) from meter.event_redeliveries where verdict = 'duplicate' and offered_pruned_at is not null),
          0::bigint, 'a duplicate (which has no payload) is not touched');

select * from finish();
rollback;
