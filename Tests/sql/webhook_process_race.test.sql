-- meter.webhook_process with two processors at once (each `meterctl serve` runs one), on an
-- invoice whose row does not exist yet: processor A applies invoice.paid and has not committed,
-- processor B takes invoice.created (A holds the paid event, SKIP LOCKED) and waits on A's insert.
-- When A commits, B must find the paid row and leave it paid (outcome 'stale'), not turn it back
-- into a draft for good (its redeliveries are deduplicated, so nothing would repair it). Then the
-- ranks: uncollectible is not final, a later paid still applies.
--
-- The race is between commits, so A and B are real sessions (dblink, back to this database over
-- its own socket) whose data is committed; the file deletes what it made at the end. The checks
-- themselves run in this file's transaction.
begin;
select plan(8);
create extension if not exists dblink;
\ir support/fixtures.sql

-- An invoice.* event of invoice in_race_1 with the given status (one line of quantity `q`).
create function pg_temp.ev(p_id text, p_type text, p_invoice text, p_status text, p_q int) returns text language sql
as $$ select pg_catalog.format('select meter.webhook_receive(%L, %L, now(), %L::jsonb)', p_id, p_type,
    pg_catalog.jsonb_build_object('id', p_id, 'object', 'event', 'type', p_type, 'created', 1764000000,
        'data', pg_catalog.jsonb_build_object('object', pg_catalog.jsonb_build_object(
            'id', p_invoice, 'object', 'invoice', 'customer', 'cus_race', 'status', p_status, 'currency', 'usd',
            'period_start', 1761955200, 'period_end', 1764547200, 'subtotal', p_q * 100, 'total', p_q * 100,
            'amount_due', p_q * 100, 'amount_paid', 0, 'created', 1764000000,
            'lines', pg_catalog.jsonb_build_object('object', 'list', 'data', pg_catalog.jsonb_build_array(
                pg_catalog.jsonb_build_object('id', 'il_' || p_id, 'object', 'line_item', 'amount', p_q * 100,
                    'quantity', p_q, 'subscription_item', 'si_race', 'period',
                    pg_catalog.jsonb_build_object('start', 1761955200, 'end', 1764547200)))))))::text) $$;

select dblink_connect('race_a', pg_temp.conninfo());
select dblink_connect('race_b', pg_temp.conninfo());
-- Received paid first (the oldest: A's webhook_process(1) takes it), then created.
select * from dblink('race_a', pg_temp.ev('evt_race_paid', 'invoice.paid', 'in_race_1', 'paid', 3)) as t(stored boolean);
select * from dblink('race_a', pg_temp.ev('evt_race_created', 'invoice.created', 'in_race_1', 'draft', 2)) as t(stored boolean);

-- A: applies paid, uncommitted.
select dblink_exec('race_a', 'begin');
select is((select n from dblink('race_a', 'select meter.webhook_process(1)') as t(n int)), 1,
          'processor A applied one event (invoice.paid) and has not committed');
-- B: takes created and waits on A's row.
create temp table b_pid as select pid from dblink('race_b', 'select pg_backend_pid()') as t(pid int);
select dblink_send_query('race_b', 'select meter.webhook_process(1)');
select ok(pg_temp.waits((select pid from b_pid)), 'processor B waits for A''s uncommitted invoice row');
select dblink_exec('race_a', 'commit');
select is((select n from dblink_get_result('race_b') as t(n int)), 1, 'then B handled its one event (invoice.created)');
select dblink_get_result('race_b');  -- end of B's query

select results_eq(
    $$select status, status_rank, total, last_event_id from dblink('race_a',
        'select status, status_rank, total, last_event_id from meter.billing_invoices where invoice_id = ''in_race_1''')
        as t(status text, status_rank smallint, total bigint, last_event_id text)$$,
    $$values ('paid'::text, 4::smallint, 300::bigint, 'evt_race_paid'::text)$$,
    'the invoice stays paid: the late draft changed nothing');
select results_eq(
    $$select line_id, quantity from dblink('race_a',
        'select line_id, quantity from meter.billing_invoice_lines where invoice_id = ''in_race_1''')
        as t(line_id text, quantity numeric)$$,
    $$values ('il_evt_race_paid'::text, 3::numeric)$$,
    'and keeps the paid event''s lines (the draft''s did not replace them)');
select results_eq(
    $$select event_id, outcome from dblink('race_a',
        'select event_id, outcome from meter.webhook_events where event_id like ''evt_race_%'' order by received_at')
        as t(event_id text, outcome text)$$,
    $$values ('evt_race_paid'::text, 'applied'::text), ('evt_race_created', 'stale')$$,
    'paid applied, created stale');

-- Uncollectible is not final (Stripe: it may still be paid or voided); paid is.
select * from dblink('race_a', pg_temp.ev('evt_race_uncollectible', 'invoice.marked_uncollectible', 'in_race_2', 'uncollectible', 1)) as t(stored boolean);
select * from dblink('race_a', pg_temp.ev('evt_race_paid_later', 'invoice.paid', 'in_race_2', 'paid', 1)) as t(stored boolean);
select * from dblink('race_a', pg_temp.ev('evt_race_open_late', 'invoice.finalized', 'in_race_2', 'open', 1)) as t(stored boolean);
select * from dblink('race_a', 'select meter.webhook_process(10)') as t(n int);  -- in order of receipt
select results_eq(
    $$select status, status_rank from dblink('race_a',
        'select status, status_rank from meter.billing_invoices where invoice_id = ''in_race_2''')
        as t(status text, status_rank smallint)$$,
    $$values ('paid'::text, 4::smallint)$$,
    'uncollectible (3) then paid (4): paid; a late open (2) is stale');
select results_eq(
    $$select event_id, outcome from dblink('race_a',
        'select event_id, outcome from meter.webhook_events where event_id in (''evt_race_uncollectible'', ''evt_race_paid_later'', ''evt_race_open_late'') order by received_at')
        as t(event_id text, outcome text)$$,
    $$values ('evt_race_uncollectible'::text, 'applied'::text), ('evt_race_paid_later', 'applied'), ('evt_race_open_late', 'stale')$$,
    'each event''s outcome');

-- What the sessions committed goes.
select dblink_exec('race_a', 'delete from meter.billing_invoice_lines where invoice_id like ''in_race_%''');
select dblink_exec('race_a', 'delete from meter.billing_invoices where invoice_id like ''in_race_%''');
select dblink_exec('race_a', 'delete from meter.webhook_events where event_id like ''evt_race_%''');
select dblink_disconnect('race_a');
select dblink_disconnect('race_b');

select * from finish();
rollback;
