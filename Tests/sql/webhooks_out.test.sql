-- Outgoing webhooks (0017_outgoing_webhooks, issue 16): endpoints per event type, one message per
-- occurrence (meter._webhook_emit: the same key twice is one message), deliveries claimed with
-- SKIP LOCKED and reported (delivered on 2xx; retried with backoff; dead after the give-up time;
-- re-driven), rotation keeps the previous secret; period_close emits invoice.closed once.
begin;
select plan(25);
\ir support/fixtures.sql

create temp table ep as
select meter.webhook_endpoint_set(null, 'http://127.0.0.1:9/hooks', array['invoice.closed'],
                                  'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw') as inv,
       meter.webhook_endpoint_set(null, 'https://ops.example/hooks', array['sync.dead_letter', 'invoice.closed'],
                                  'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD') as ops;

select throws_ok($$select meter.webhook_endpoint_set(null, 'ftp://x', array['invoice.closed'], 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')$$,
                 '22023', null, 'a URL that is not http(s) is refused');
select throws_ok($$select meter.webhook_endpoint_set(null, 'http://x', array['invoice.paid'], 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw')$$,
                 '22023', null, 'an event type meter does not send is refused');
select throws_ok($$select meter.webhook_endpoint_set(null, 'http://x', array['invoice.closed'], 'secret')$$,
                 '22023', null, 'a secret that is not whsec_ + base64 is refused');

select ok(meter._webhook_emit('invoice.closed', 'invoice:t1', '{"invoice_id": 1}') ~ '^msg_[0-9a-f]{32}$', 'a message is recorded');
select is(meter._webhook_emit('invoice.closed', 'invoice:t1', '{"invoice_id": 1}'), null, 'the same occurrence again is no new message');
select is((select count(*) from meter.webhook_deliveries), 2::bigint, 'one delivery per endpoint taking the type');
select ok(meter._webhook_emit('sync.dead_letter', 'dead:t1', '{"meter": "x"}') is not null, 'a dead letter message');

select is((select count(*) from meter.webhook_deliveries d join meter.webhook_messages m on m.id = d.message_id
           where m.type = 'sync.dead_letter'), 1::bigint, '... goes to the one endpoint that takes it');

create temp table c1 as select * from meter.webhook_claim('tap-w', 10);
select is((select count(*) from c1), 3::bigint, 'three deliveries claimed');
select is_empty($$select * from meter.webhook_claim('tap-w2', 10)$$, 'a second worker finds nothing while they are in flight');
select results_eq($$select distinct type, payload::jsonb from c1 where type = 'invoice.closed'$$,
                  $$values ('invoice.closed'::text, '{"invoice_id": 1}'::jsonb)$$, 'a claim carries the type and payload');
select is(meter.webhook_report(c.message_id, c.endpoint_id, c.claim_token, 500, 'HTTP 500'), 'pending',
          'a 500 is retried') from c1 c where c.endpoint_id = (select inv from ep) and c.type = 'invoice.closed';
select ok((select next_attempt_at > now() and attempts = 1 from meter.webhook_deliveries
           where endpoint_id = (select inv from ep) and state = 'pending'), '... after a backoff');
select is(meter.webhook_report(c.message_id, c.endpoint_id, c.claim_token, 204), 'delivered', 'a 2xx is delivered')
from c1 c where c.endpoint_id = (select ops from ep) and c.type = 'invoice.closed';
select is(meter.webhook_report(c.message_id, c.endpoint_id, c.claim_token, 204), 'stale', 'a second report of one claim is stale')
from c1 c where c.endpoint_id = (select ops from ep) and c.type = 'invoice.closed';
-- The give-up time: the dead letter's delivery is older than it, and fails once more: dead.
update meter.webhook_deliveries set created_at = now() - interval '4 days'
where message_id = (select message_id from c1 where type = 'sync.dead_letter');
select is(meter.webhook_report(c.message_id, c.endpoint_id, c.claim_token, null, 'connection refused'), 'dead',
          'no answer past the give-up time: dead') from c1 c where c.type = 'sync.dead_letter';
select is(meter.webhook_redrive(), 1::bigint, 'redrive sends the dead one again');

select meter.webhook_endpoint_set((select ops from ep), p_secret => 'whsec_Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9v');
select results_eq($$select secret, previous_secret from meter.webhook_endpoints where id = (select ops from ep)$$,
                  $$values ('whsec_Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9v'::text, 'whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD'::text)$$,
                  'a rotation keeps the previous secret (both sign until the next one)');
select meter.webhook_endpoint_set((select inv from ep), p_enabled => false);
update meter.webhook_deliveries set next_attempt_at = now();
select is((select count(*) from meter.webhook_claim('tap-w3', 10) where endpoint_id = (select inv from ep)), 0::bigint,
          'a disabled endpoint gets nothing');

-- period_close tells invoice.closed once.
update meter.rollup_watermark set position_xid = '0', position_id = 0;
select meter.customer_upsert('tap-wo-a'), meter.meter_upsert('tap.wo.calls', 'count'), meter.plan_upsert('tap-wo-plan', 'eur');
select meter.plan_price_set('tap-wo-plan', 'tap.wo.calls', 'per_unit', 2);
select meter.customer_subscribe('tap-wo-a', 'tap-wo-plan', '2024-03');
select meter.period_close('2024-03', 'tap-wo-a', interval '0');
select meter.period_close('2024-03', 'tap-wo-a', interval '0');
select results_eq($$select payload ->> 'customer', payload ->> 'period', (payload ->> 'total')::bigint from meter.webhook_messages
                    where type = 'invoice.closed' and payload ->> 'customer' = 'tap-wo-a'$$,
                  $$values ('tap-wo-a'::text, '2024-03'::text, 0::bigint)$$, 'the close emits invoice.closed, once');

-- A late event folded into the closed March: usage.late_after_close, to an endpoint that takes it.
select meter.webhook_endpoint_set(null, 'http://127.0.0.1:9/late', array['usage.late_after_close'],
                                  'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw');
update meter.rollup_watermark set position_xid = '300', position_id = 0;
select pg_temp.put('tap-wo-a', 'tap.wo.calls', 'late-1', '2024-03-20 10:00+00', 1, '{}', '300');
select meter.rollup_run();
select results_eq($$select payload ->> 'customer', payload ->> 'period', payload -> 'meters', (payload ->> 'hours_changed')::int
                    from meter.webhook_messages where type = 'usage.late_after_close'$$,
                  $$values ('tap-wo-a'::text, '2024-03'::text, '["tap.wo.calls"]'::jsonb, 1)$$,
                  'a late event folded into a closed period is told, naming the customer, period and meter');

-- Many occurrences at once (meter._webhook_emit_all, the implementation of every emit).
select ok(meter._webhook_emit('alert.triggered', 'tap-wo-many:1', '{"n": 1}') is not null, 'one occurrence recorded first');
select results_eq(
    $$select count(*), count(distinct message_id)
      from meter._webhook_emit_all('alert.triggered', array['tap-wo-many:1', 'tap-wo-many:2', 'tap-wo-many:3'],
                                   array['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[])$$,
    $$values (2::bigint, 2::bigint)$$,
    'many occurrences at once: a message each for the two new ones, none again for the one recorded');
select results_eq(
    $$select count(*) from meter._webhook_emit_all('alert.triggered', array['tap-wo-many:5', 'tap-wo-many:5'],
                                                  array['{"n": 5}', '{"n": 5}']::jsonb[])$$,
    $$values (1::bigint)$$, 'a key given twice in one call is one message');
select throws_ok($$select * from meter._webhook_emit_all('alert.triggered', array['tap-wo-many:4', null], array['{}', '{}']::jsonb[])$$,
                 '22023', null, 'a null key among many: refused, nothing recorded (22023)');

select * from finish();
rollback;
