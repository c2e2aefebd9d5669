-- meter.period_close against a price change and a timezone change made at the same time in other
-- sessions. A close holds the advisory lock 'meter.close' until it commits; plan_price_set and a
-- timezone change in customer_upsert take the same lock before they look for invoices, so they
-- wait for the close and are then refused (55000): the closed month is never re-priced, and no
-- hour falls between two months. Before, both went through during the close.
--
-- The race is between commits, so the close and the changes run in real sessions (dblink, back to
-- this database over its own socket); what they commit is deleted at the end (invoices are frozen
-- by triggers, so the cleanup session runs with session_replication_role = replica).
begin;
select plan(6);
create extension if not exists dblink;
\ir support/fixtures.sql


select dblink_connect('close_a', pg_temp.conninfo());
select dblink_connect('close_b', pg_temp.conninfo());
create temp table b_pid as select pid from dblink('close_b', 'select pg_backend_pid()') as t(pid int);
-- Committed set-up: a customer on a plan that prices a meter, from January 2025 (no usage needed:
-- the close invoices the priced meter at quantity 0).
select * from dblink('close_a', $q$
    select meter.customer_upsert('tap-cr-a', 'Close race', 'UTC'), meter.meter_upsert('tap.cr.calls', 'count'),
           meter.plan_upsert('tap-cr-plan', 'usd', 'Close race')
$q$) as t(c bigint, m bigint, p bigint);
select dblink_exec('close_a', $q$do $d$ begin perform meter.plan_price_set('tap-cr-plan', 'tap.cr.calls', 'per_unit', 2, null, null); end $d$$q$);
select dblink_exec('close_a', $q$do $d$ begin perform meter.customer_subscribe('tap-cr-a', 'tap-cr-plan', '2025-01'); end $d$$q$);

-- A closes January 2025 and has not committed; B changes the price meanwhile.
select dblink_exec('close_a', 'begin');
select is((select outcome from dblink('close_a', $q$select outcome from meter.period_close('2025-01', 'tap-cr-a', interval '0')$q$)
           as t(outcome text)), 'closed', 'A closed 2025-01 for tap-cr-a (uncommitted)');
select dblink_send_query('close_b', $q$select meter.plan_price_set('tap-cr-plan', 'tap.cr.calls', 'per_unit', 5, null, null)$q$);
select ok(pg_temp.waits((select pid from b_pid)), 'the price change waits for the running close');
select dblink_exec('close_a', 'commit');
select dblink_get_result('close_b', false);
select matches(dblink_error_message('close_b'), 'has invoiced meter tap.cr.calls at its current price',
               'then it is refused: the closed month keeps its price');
select dblink_get_result('close_b', false);  -- the end of B's query
select results_eq(
    $$select unit_amount from dblink('close_a', $q$select trim_scale(pp.unit_amount) from meter.plan_prices pp
        join meter.plans p on p.id = pp.plan_id where p.code = 'tap-cr-plan'$q$) as t(unit_amount numeric)$$,
    $$values (2::numeric)$$, 'the stored price is the one the invoice used');

-- The same for a timezone change: A closes February, B moves the customer to Asia/Tokyo meanwhile.
select dblink_exec('close_a', 'begin');
select dblink_exec('close_a', $q$do $d$ begin perform meter.period_close('2025-02', 'tap-cr-a', interval '0'); end $d$$q$);
select dblink_send_query('close_b', $q$select meter.customer_upsert('tap-cr-a', null, 'Asia/Tokyo')$q$);
select ok(pg_temp.waits((select pid from b_pid)), 'the timezone change waits for the running close');
select dblink_exec('close_a', 'commit');
select dblink_get_result('close_b', false);
select matches(dblink_error_message('close_b'), 'has closed billing periods: its billing timezone cannot change',
               'then it is refused: no hour falls between two months');

-- What the sessions committed goes.
select dblink_exec('close_a', $q$
    set session_replication_role = replica;
    delete from meter.invoice_lines where invoice_id in (select i.id from meter.invoices i join meter.customers c on c.id = i.customer_id where c.external_id = 'tap-cr-a');
    delete from meter.invoices where customer_id = (select id from meter.customers where external_id = 'tap-cr-a');
    delete from meter.customer_plans where customer_id = (select id from meter.customers where external_id = 'tap-cr-a');
    delete from meter.plan_prices where plan_id = (select id from meter.plans where code = 'tap-cr-plan');
    delete from meter.plans where code = 'tap-cr-plan';
    delete from meter.meter_versions where meter_id = (select id from meter.meters where code = 'tap.cr.calls');
    delete from meter.meters where code = 'tap.cr.calls';
    delete from meter.customers where external_id = 'tap-cr-a';
    set session_replication_role = origin
$q$);
select dblink_disconnect('close_a');
select dblink_disconnect('close_b');

select * from finish();
rollback;
