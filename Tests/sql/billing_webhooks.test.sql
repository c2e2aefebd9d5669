-- Links and webhooks of the billing sync (0003_billing_sync):
--   * meter.billing_unlinked(): (customer, meter) pairs with pending outbox hours and no
--     subscription item, with the price and whatever billing customer / subscription exists;
--   * meter.billing_link_record(): records the provisioned objects step by step, idempotently,
--     and never re-points a customer or a link (23505);
--   * meter.webhook_receive(): stores an event once by id (true, then false for a redelivery);
--   * meter.webhook_process(): applies invoice.* events to meter.billing_invoices and its lines
--     (mapped back to customer and meter through meter.billing_links, quantities exact), status
--     only moving forward (a late, lower or equal status is 'stale'), other events 'ignored';
--   * the views meter.sync_status and meter.sync_backlog.
-- Payloads are shaped like the engine's (Stripe-like events carrying the whole invoice).
-- Events are processed one delivery at a time where order matters: within this one test
-- transaction every received_at is the same instant.
-- Emulated history as in rollup_run.test.sql (explicit xids of finished transactions); the suite
-- runs on a freshly migrated database (checked first: sync_backlog counts globally).
begin;
select plan(61);

select is_empty($$select 1 from meter.events$$,
                'precondition: no stored events (the suite runs on a freshly migrated database)');
select is_empty($$select 1 from meter.sync_outbox union all select 1 from meter.webhook_events$$,
                'precondition: no outbox hour, no webhook event');

update meter.rollup_watermark set position_xid = '0', position_id = 0;

create temp table fx as
select meter.customer_upsert('tap-bw-a', 'TAP Alpha') as cust_a,
       meter.customer_upsert('tap-bw-b', 'TAP Beta')  as cust_b,
       meter.customer_upsert('tap-bw-c')              as cust_c,
       meter.meter_upsert('tap.bw.calls')             as m_calls,
       meter.meter_upsert('tap.bw.bytes', 'sum')      as m_bytes;

\ir support/fixtures.sql

select meter.billing_price_set('tap.bw.calls', 'price_calls');
select meter.billing_price_set('tap.bw.bytes', 'price_bytes');
select pg_temp.put('tap-bw-a', 'tap.bw.calls', 'a1', '2024-03-10 10:05+00', 1);
select pg_temp.put('tap-bw-a', 'tap.bw.calls', 'a2', '2024-03-10 11:05+00', 1);
select pg_temp.put('tap-bw-a', 'tap.bw.bytes', 'a3', '2024-03-10 10:05+00', 2.5);
select pg_temp.put('tap-bw-b', 'tap.bw.calls', 'b1', '2024-03-10 10:05+00', 1);
select pg_temp.put('tap-bw-c', 'tap.bw.calls', 'c1', '2024-03-10 10:05+00', 1);
select results_eq($$select events_folded, hours_touched from meter.rollup_run()$$, $$values (5::bigint, 5::bigint)$$,
                  'setup: 5 events folded into 5 hours, all enqueued (both meters are priced)');

-- ---------------------------------------------------------------------------------------------
-- billing_unlinked and billing_link_record.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select customer_id, customer_external_id, customer_name, meter_id, meter_code, price_id, billing_customer_id, subscription_id
      from meter.billing_unlinked()$$,
    $$values ((select cust_a from fx), 'tap-bw-a'::text, 'TAP Alpha'::text, (select m_calls from fx), 'tap.bw.calls'::text, 'price_calls'::text, null::text, null::text),
             ((select cust_a from fx), 'tap-bw-a', 'TAP Alpha', (select m_bytes from fx), 'tap.bw.bytes', 'price_bytes', null, null),
             ((select cust_b from fx), 'tap-bw-b', 'TAP Beta', (select m_calls from fx), 'tap.bw.calls', 'price_calls', null, null),
             ((select cust_c from fx), 'tap-bw-c', null, (select m_calls from fx), 'tap.bw.calls', 'price_calls', null, null)$$,
    'billing_unlinked: each (customer, meter) pair with pending hours once (tap-bw-a''s two calls hours: one row), '
    'with its price, in customer and meter order');
select results_eq($$select customer_external_id, meter_code from meter.billing_unlinked(1)$$,
                  $$values ('tap-bw-a'::text, 'tap.bw.calls'::text)$$, 'billing_unlinked(1): the first pair only');

select lives_ok($$select meter.billing_link_record((select cust_a from fx), null, 'cus_tap_a', null, null, null)$$,
                'the billing customer alone is recorded');
select results_eq($$select customer_id, billing_customer_id, subscription_id from meter.billing_customers$$,
                  $$values ((select cust_a from fx), 'cus_tap_a'::text, null::text)$$,
                  'billing_customers: tap-bw-a -> cus_tap_a, no subscription yet; no link');
select lives_ok($$select meter.billing_link_record((select cust_a from fx), null, 'cus_tap_a', 'sub_tap_a', null, null)$$,
                'then its subscription');
select results_eq(
    $$select meter_code, billing_customer_id, subscription_id from meter.billing_unlinked() where customer_external_id = 'tap-bw-a'
      order by meter_id$$,
    $$values ('tap.bw.calls'::text, 'cus_tap_a'::text, 'sub_tap_a'::text), ('tap.bw.bytes', 'cus_tap_a', 'sub_tap_a')$$,
    'billing_unlinked now hands the worker tap-bw-a''s billing customer and subscription (to add items only)');

select lives_ok(
    $$select meter.billing_link_record((select cust_a from fx), (select m_calls from fx), 'cus_tap_a', 'sub_tap_a', 'si_tap_a_calls', 'price_calls')$$,
    'the subscription item of (tap-bw-a, tap.bw.calls) is recorded');
create temp table link_before as select * from meter.billing_links;
select lives_ok(
    $$select meter.billing_link_record((select cust_a from fx), (select m_calls from fx), 'cus_tap_a', 'sub_tap_a', 'si_tap_a_calls', 'price_calls')$$,
    'recording the very same objects again is accepted');
select results_eq($$select * from meter.billing_links$$, $$select * from link_before$$,
                  'and changes nothing: one link, as recorded the first time');
select results_eq($$select customer_id, billing_customer_id, subscription_id from meter.billing_customers$$,
                  $$values ((select cust_a from fx), 'cus_tap_a'::text, 'sub_tap_a'::text)$$,
                  'one billing customer row, with its subscription');

select throws_ok(
    $$select meter.billing_link_record((select cust_a from fx), (select m_calls from fx), 'cus_tap_a', 'sub_tap_a', 'si_tap_a_other', 'price_calls')$$,
    '23505', pg_catalog.format('customer %s meter %s is already linked to subscription item si_tap_a_calls, not si_tap_a_other',
                               (select cust_a from fx), (select m_calls from fx)),
    'a link is never re-pointed to another subscription item (23505)');
select throws_ok(
    $$select meter.billing_link_record((select cust_a from fx), null, 'cus_tap_other', null, null, null)$$,
    '23505', pg_catalog.format('customer %s is already linked to billing customer cus_tap_a, not cus_tap_other', (select cust_a from fx)),
    'a customer is never re-pointed to another billing customer (23505)');
select throws_ok(
    $$select meter.billing_link_record((select cust_a from fx), (select m_bytes from fx), 'cus_tap_a', 'sub_tap_a', 'si_tap_a_calls', 'price_bytes')$$,
    '23505', null, 'one subscription item cannot bill two pairs (23505)');
select throws_ok(
    $$select meter.billing_link_record((select cust_b from fx), null, 'cus_tap_a', null, null, null)$$,
    '23505', null, 'one billing customer cannot stand for two customers (23505)');
select throws_ok(
    $$select meter.billing_link_record((select cust_b from fx), null, null, null, null, null)$$,
    '22023', 'billing customer id is required', 'the billing customer id is required (22023)');
select results_eq($$select customer_id, meter_id, subscription_item_id, price_id from meter.billing_links$$,
                  $$values ((select cust_a from fx), (select m_calls from fx), 'si_tap_a_calls'::text, 'price_calls'::text)$$,
                  'the refused calls changed no link');

select meter.billing_link_record((select cust_a from fx), (select m_bytes from fx), 'cus_tap_a', 'sub_tap_a', 'si_tap_a_bytes', 'price_bytes');
select meter.billing_link_record((select cust_b from fx), (select m_calls from fx), 'cus_tap_b', 'sub_tap_b', 'si_tap_b_calls', 'price_calls');
select results_eq($$select customer_external_id, meter_code from meter.billing_unlinked()$$,
                  $$values ('tap-bw-c'::text, 'tap.bw.calls'::text)$$,
                  'once linked, a pair leaves billing_unlinked; tap-bw-c remains');

-- ---------------------------------------------------------------------------------------------
-- meter.sync_status and meter.sync_backlog.
-- State: a calls 10 synced, a calls 11 dead, a bytes 10 in flight, b calls 10 pending after a
-- failure (unsynced for 90 s), c calls 10 pending and unlinked.
-- ---------------------------------------------------------------------------------------------
create temp table claimed as select * from meter.sync_claim('tap-bw-worker');
select results_eq($$select customer_id, meter_id, hour from claimed order by customer_id, meter_id, hour$$,
                  $$values ((select cust_a from fx), (select m_calls from fx), '2024-03-10 10:00+00'::timestamptz),
                           ((select cust_a from fx), (select m_calls from fx), '2024-03-10 11:00+00'),
                           ((select cust_a from fx), (select m_bytes from fx), '2024-03-10 10:00+00'),
                           ((select cust_b from fx), (select m_calls from fx), '2024-03-10 10:00+00')$$,
                  'setup: the 4 linked hours are claimed');
select results_eq(
    $$select meter.sync_succeeded(customer_id, meter_id, hour, claim_token) from claimed
      where customer_id = (select cust_a from fx) and meter_id = (select m_calls from fx) and hour = '2024-03-10 10:00+00'
      union all
      select meter.sync_failed(customer_id, meter_id, hour, claim_token, 'boom', true, 1) from claimed
      where customer_id = (select cust_a from fx) and meter_id = (select m_calls from fx) and hour = '2024-03-10 11:00+00'
      union all
      select meter.sync_failed(customer_id, meter_id, hour, claim_token, 'timeout') from claimed
      where customer_id = (select cust_b from fx)$$,
    $$values ('synced'::text), ('dead'), ('pending')$$,
    'setup: one synced, one dead, one pending after a failure');
update meter.sync_outbox set unsynced_since = pg_catalog.now() - interval '90 seconds'
where customer_id = (select cust_b from fx);

select results_eq(
    $$select customer, meter, customer_id, meter_id, subscription_item_id, linked, pending, in_flight, synced, dead,
             oldest_unsynced_age, last_synced_at, last_error
      from meter.sync_status where customer like 'tap-bw-%' order by customer, meter$$,
    $$values ('tap-bw-a'::text, 'tap.bw.bytes'::text, (select cust_a from fx), (select m_bytes from fx), 'si_tap_a_bytes'::text,
              true, 0::bigint, 1::bigint, 0::bigint, 0::bigint, interval '0', null::timestamptz, null::text),
             ('tap-bw-a', 'tap.bw.calls', (select cust_a from fx), (select m_calls from fx), 'si_tap_a_calls',
              true, 0, 0, 1, 1, interval '0', pg_catalog.now(), 'boom'),
             ('tap-bw-b', 'tap.bw.calls', (select cust_b from fx), (select m_calls from fx), 'si_tap_b_calls',
              true, 1, 0, 0, 0, interval '90 seconds', null, 'timeout'),
             ('tap-bw-c', 'tap.bw.calls', (select cust_c from fx), (select m_calls from fx), null,
              false, 1, 0, 0, 0, interval '0', null, null)$$,
    'sync_status per customer and meter: link, hours pending / in flight / synced / dead, the oldest unsynced '
    'age, the last sync and the last error');

select results_eq(
    $$select pending, in_flight, dead, oldest_unsynced_seconds, webhooks_unprocessed from meter.sync_backlog$$,
    $$values (2::bigint, 1::bigint, 1::bigint, 90.000::numeric(20, 3), 0::bigint)$$,
    'sync_backlog: 2 pending (b, c), 1 in flight, 1 dead, oldest unsynced 90 s, no webhook waiting');

-- ---------------------------------------------------------------------------------------------
-- webhook_receive.
-- ---------------------------------------------------------------------------------------------
-- An invoice event as the engine sends it. Lines: (item, quantity, quantity_decimal or null, amount).
create function pg_temp.inv(p_event text, p_type text, p_invoice text, p_customer text, p_status text,
                            p_total bigint, p_paid bigint, p_finalized_at bigint, p_paid_at bigint, p_lines jsonb)
returns jsonb
language sql
as $$
    select pg_catalog.jsonb_build_object(
        'id', p_event, 'object', 'event', 'type', p_type, 'created', 1764000000,
        'data', pg_catalog.jsonb_build_object('object', pg_catalog.jsonb_build_object(
            'id', p_invoice, 'object', 'invoice', 'customer', p_customer, 'subscription', 'sub_' || p_customer,
            'status', p_status, 'currency', 'usd', 'period_start', 1761955200, 'period_end', 1764547200,
            'subtotal', p_total, 'total', p_total, 'amount_due', p_total, 'amount_paid', p_paid, 'created', 1764000000,
            'status_transitions', pg_catalog.jsonb_build_object('finalized_at', p_finalized_at, 'paid_at', p_paid_at),
            'lines', pg_catalog.jsonb_build_object('object', 'list', 'data',
                (select coalesce(pg_catalog.jsonb_agg(pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                     'id', 'il_' || (l ->> 0), 'object', 'line_item', 'amount', (l ->> 3)::bigint, 'currency', 'usd',
                     'quantity', (l ->> 1)::bigint, 'quantity_decimal', l ->> 2, 'subscription_item', l ->> 0,
                     'price', pg_catalog.jsonb_build_object('id', 'price_x'),
                     'period', pg_catalog.jsonb_build_object('start', 1761955200, 'end', 1764547200),
                     'description', 'usage of ' || (l ->> 0))) order by o), '[]')
                 from pg_catalog.jsonb_array_elements(p_lines) with ordinality as x(l, o))))))
$$;
create function pg_temp.receive(p jsonb) returns boolean language sql
as $$ select meter.webhook_receive(p ->> 'id', p ->> 'type', pg_catalog.to_timestamp((p ->> 'created')::bigint), p) $$;
create temp view invoice as
select invoice_id, billing_customer_id, customer_id, subscription_id, status, status_rank, currency, period_start,
       period_end, subtotal, total, amount_due, amount_paid, created, finalized_at, paid_at, last_event_id
from meter.billing_invoices;
create temp view outcomes as
select event_id, outcome, processed_at = pg_catalog.now() as processed from meter.webhook_events;

create temp table ev (name text primary key, p jsonb not null);
insert into ev values
('a_created', pg_temp.inv('evt_a_created', 'invoice.created', 'in_tap_a', 'cus_tap_a', 'draft', 1200, 0, null, null,
    '[["si_tap_a_bytes", 3, "2.5", 700], ["si_tap_a_calls", 2, null, 500]]')),
('a_finalized', pg_temp.inv('evt_a_finalized', 'invoice.finalized', 'in_tap_a', 'cus_tap_a', 'open', 1234, 0, 1764003600, null,
    '[["si_tap_a_bytes", 3, "2.500000000001", 734], ["si_tap_a_calls", 2, null, 500], ["si_tap_elsewhere", 1, null, 0]]')),
('a_paid', pg_temp.inv('evt_a_paid', 'invoice.paid', 'in_tap_a', 'cus_tap_a', 'paid', 1234, 1234, 1764003600, 1764090000,
    '[["si_tap_a_bytes", 3, "2.500000000001", 734], ["si_tap_a_calls", 2, null, 500], ["si_tap_elsewhere", 1, null, 0]]')),
('a_finalized_again', pg_temp.inv('evt_a_finalized_again', 'invoice.finalized', 'in_tap_a', 'cus_tap_a', 'open', 999, 0, 1764003600, null,
    '[["si_tap_a_calls", 99, null, 999]]')),
('b_paid', pg_temp.inv('evt_b_paid', 'invoice.paid', 'in_tap_b', 'cus_tap_b', 'paid', 300, 300, 1764003600, 1764090000,
    '[["si_tap_b_calls", 1, null, 300]]')),
('b_finalized', pg_temp.inv('evt_b_finalized', 'invoice.finalized', 'in_tap_b', 'cus_tap_b', 'open', 300, 0, 1764003600, null,
    '[["si_tap_b_calls", 1, null, 300]]'));

select is(pg_temp.receive((select p from ev where name = 'a_created')), true, 'webhook_receive: a new event -> true');
select is(pg_temp.receive((select p from ev where name = 'a_created') || '{"redelivered": true}'), false,
          'the same event id again -> false (a redelivery)');
select results_eq($$select event_id, type, created, payload ? 'redelivered', processed_at, outcome from meter.webhook_events$$,
                  $$values ('evt_a_created'::text, 'invoice.created'::text, pg_catalog.to_timestamp(1764000000), false,
                            null::timestamptz, null::text)$$,
                  'stored once, as first received, unprocessed');
select throws_ok($$select meter.webhook_receive('in_tap_not_an_event', 'invoice.paid', pg_catalog.now(), '{}')$$, '23514', null,
                 'an id that is not an event id (evt_...) is refused');
select results_eq($$select webhooks_unprocessed from meter.sync_backlog$$, $$values (1::bigint)$$,
                  'sync_backlog counts the unprocessed webhook');

-- ---------------------------------------------------------------------------------------------
-- webhook_process: draft -> open -> paid, then a late open.
-- ---------------------------------------------------------------------------------------------
select is(meter.webhook_process(), 1, 'webhook_process handles the one stored event');
select results_eq($$select outcome, processed from outcomes where event_id = 'evt_a_created'$$,
                  $$values ('applied'::text, true)$$, 'invoice.created: applied, processed now');
select results_eq(
    $$select * from invoice$$,
    $$values ('in_tap_a'::text, 'cus_tap_a'::text, (select cust_a from fx), 'sub_cus_tap_a'::text, 'draft'::text, 1::smallint,
              'usd'::text, '2025-11-01 00:00+00'::timestamptz, '2025-12-01 00:00+00'::timestamptz, 1200::bigint, 1200::bigint,
              1200::bigint, 0::bigint, '2025-11-24 16:00+00'::timestamptz, null::timestamptz, null::timestamptz, 'evt_a_created'::text)$$,
    'the draft invoice, mapped to tap-bw-a through billing_customers, amounts in minor units, epoch times as timestamptz');
select results_eq(
    $$select line_id, subscription_item_id, price_id, customer_id, meter_id, quantity, amount, currency, period_start, period_end, description
      from meter.billing_invoice_lines order by line_id$$,
    $$values ('il_si_tap_a_bytes'::text, 'si_tap_a_bytes'::text, 'price_x'::text, (select cust_a from fx), (select m_bytes from fx),
              2.5::numeric, 700::bigint, 'usd'::text, '2025-11-01 00:00+00'::timestamptz, '2025-12-01 00:00+00'::timestamptz,
              'usage of si_tap_a_bytes'::text),
             ('il_si_tap_a_calls', 'si_tap_a_calls', 'price_x', (select cust_a from fx), (select m_calls from fx),
              2, 500, 'usd', '2025-11-01 00:00+00', '2025-12-01 00:00+00', 'usage of si_tap_a_calls')$$,
    'its lines, mapped to (customer, meter) by subscription item; quantity_decimal (2.5) over quantity (3), '
    'quantity when there is no quantity_decimal');

select is(pg_temp.receive((select p from ev where name = 'a_finalized')), true, 'invoice.finalized received');
select is(meter.webhook_process(), 1, 'and processed');
select results_eq(
    $$select status, status_rank, total, amount_paid, finalized_at, paid_at, last_event_id from invoice where invoice_id = 'in_tap_a'$$,
    $$values ('open'::text, 2::smallint, 1234::bigint, 0::bigint, '2025-11-24 17:00+00'::timestamptz, null::timestamptz, 'evt_a_finalized'::text)$$,
    'finalized: status open, the final amounts, finalized_at');
select results_eq(
    $$select line_id, customer_id, meter_id, quantity, amount from meter.billing_invoice_lines order by line_id$$,
    $$values ('il_si_tap_a_bytes'::text, (select cust_a from fx), (select m_bytes from fx), 2.500000000001::numeric, 734::bigint),
             ('il_si_tap_a_calls', (select cust_a from fx), (select m_calls from fx), 2, 500),
             ('il_si_tap_elsewhere', null, null, 1, 0)$$,
    'the lines are replaced by the finalized ones: quantity_decimal exact (2.500000000001), a line of an item '
    'we do not know keeps null customer and meter');

select is(pg_temp.receive((select p from ev where name = 'a_paid')), true, 'invoice.paid received');
select is(pg_temp.receive((select p from ev where name = 'a_paid')), false, 'and its redelivery dropped');
select is(meter.webhook_process(), 1, 'one event processed (the redelivery was never stored)');
select results_eq(
    $$select status, status_rank, total, amount_paid, finalized_at, paid_at, last_event_id from invoice where invoice_id = 'in_tap_a'$$,
    $$values ('paid'::text, 4::smallint, 1234::bigint, 1234::bigint, '2025-11-24 17:00+00'::timestamptz,
              '2025-11-25 17:00+00'::timestamptz, 'evt_a_paid'::text)$$,
    'paid: status paid, amount_paid, paid_at');

select is(pg_temp.receive((select p from ev where name = 'a_finalized_again')), true, 'a late invoice.finalized (another event id)');
select is(meter.webhook_process(), 1, 'processed');
select results_eq($$select outcome from outcomes where event_id = 'evt_a_finalized_again'$$, $$values ('stale'::text)$$,
                  'its outcome is stale');
select results_eq(
    $$select status, total, amount_paid, last_event_id from invoice where invoice_id = 'in_tap_a'$$,
    $$values ('paid'::text, 1234::bigint, 1234::bigint, 'evt_a_paid'::text)$$,
    'the invoice stays paid, with the paid event''s amounts');
select is((select pg_catalog.count(*) from meter.billing_invoice_lines where invoice_id = 'in_tap_a'), 3::bigint,
          'and its lines are not replaced');

select is(pg_temp.receive(pg_temp.inv('evt_a_voided', 'invoice.voided', 'in_tap_a', 'cus_tap_a', 'void', 1, 0, null, null, '[]')),
          true, 'an invoice.voided after paid (the same rank)');
select is(meter.webhook_process(), 1, 'processed');
select results_eq(
    $$select (select outcome from outcomes where event_id = 'evt_a_voided'), status, total, last_event_id,
             (select pg_catalog.count(*) from meter.billing_invoice_lines where invoice_id = 'in_tap_a')
      from invoice where invoice_id = 'in_tap_a'$$,
    $$values ('stale'::text, 'paid'::text, 1234::bigint, 'evt_a_paid'::text, 3::bigint)$$,
    'an event of equal rank is stale too: the invoice stays paid, amounts and lines untouched');

-- ---------------------------------------------------------------------------------------------
-- Out of order: paid before finalized.
-- ---------------------------------------------------------------------------------------------
select pg_temp.receive((select p from ev where name = 'b_paid'));
select is(meter.webhook_process(), 1, 'invoice.paid of in_tap_b arrives first');
select pg_temp.receive((select p from ev where name = 'b_finalized'));
select is(meter.webhook_process(), 1, 'its invoice.finalized second');
select results_eq(
    $$select event_id, outcome from outcomes where event_id like 'evt_b_%' order by event_id$$,
    $$values ('evt_b_finalized'::text, 'stale'::text), ('evt_b_paid', 'applied')$$,
    'paid applied, the late finalized stale');
select results_eq(
    $$select customer_id, status, status_rank, amount_paid, finalized_at, paid_at, last_event_id from invoice where invoice_id = 'in_tap_b'$$,
    $$values ((select cust_b from fx), 'paid'::text, 4::smallint, 300::bigint, '2025-11-24 17:00+00'::timestamptz,
              '2025-11-25 17:00+00'::timestamptz, 'evt_b_paid'::text)$$,
    'in_tap_b stays paid');
select results_eq(
    $$select customer_id, meter_id, quantity from meter.billing_invoice_lines where invoice_id = 'in_tap_b'$$,
    $$values ((select cust_b from fx), (select m_calls from fx), 1::numeric)$$,
    'its line maps to (tap-bw-b, tap.bw.calls)');

-- ---------------------------------------------------------------------------------------------
-- Other events, an unknown status, an unknown billing customer, a batch limit.
-- ---------------------------------------------------------------------------------------------
select pg_temp.receive('{"id": "evt_other_1", "object": "event", "type": "customer.subscription.updated", "created": 1764000000,
                         "data": {"object": {"id": "sub_cus_tap_a", "object": "subscription", "status": "active"}}}');
select pg_temp.receive('{"id": "evt_other_2", "object": "event", "type": "invoice.upcoming", "created": 1764000000,
                         "data": {"object": {"object": "list"}}}');
select pg_temp.receive(pg_temp.inv('evt_weird', 'invoice.updated', 'in_tap_w', 'cus_tap_a', 'deleted', 1, 0, null, null, '[]'));
select pg_temp.receive(pg_temp.inv('evt_stranger', 'invoice.created', 'in_tap_s', 'cus_tap_stranger', 'draft', 5, 0, null, null, '[]'));
select results_eq($$select webhooks_unprocessed from meter.sync_backlog$$, $$values (4::bigint)$$,
                  'sync_backlog: 4 webhooks waiting');
select is(meter.webhook_process(3), 3, 'webhook_process(3) processes 3 of them');
select is(meter.webhook_process(3), 1, 'and the next call the last');
select is(meter.webhook_process(), 0, 'then none is left');
select results_eq(
    $$select event_id, outcome, processed from outcomes where event_id in ('evt_other_1', 'evt_other_2', 'evt_weird', 'evt_stranger')
      order by event_id$$,
    $$values ('evt_other_1'::text, 'ignored'::text, true), ('evt_other_2', 'ignored', true),
             ('evt_stranger', 'applied', true), ('evt_weird', 'unknown status deleted', true)$$,
    'non-invoice events (and an invoice.* event not carrying an invoice) are kept, ignored; '
    'an invoice with an unknown status is not applied');
select results_eq($$select invoice_id, customer_id, status from invoice where invoice_id in ('in_tap_w', 'in_tap_s')$$,
                  $$values ('in_tap_s'::text, null::bigint, 'draft'::text)$$,
                  'the invoice of an unknown billing customer is kept without a customer of ours; the unknown status stored nothing');
select results_eq($$select webhooks_unprocessed from meter.sync_backlog$$, $$values (0::bigint)$$,
                  'sync_backlog: no webhook waiting');

select * from finish();
rollback;
