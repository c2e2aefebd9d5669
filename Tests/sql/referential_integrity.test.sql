-- Referential integrity without foreign keys on meter.events: parents can never be deleted or
-- truncated, and no event or redelivery points at a missing row.
begin;
select plan(6);

select meter.customer_upsert('ri-cust');
select meter.meter_upsert('ri.calls', 'count');
select results_eq(
    $$select status from meter.event_ingest(pg_catalog.jsonb_build_array(pg_catalog.jsonb_build_object(
        'customer', 'ri-cust', 'meter', 'ri.calls', 'idempotency_key', 'ri-1', 'occurred_at', pg_catalog.now())))$$,
    $$values ('accepted'::text)$$, 'an event for the new customer and meter is stored');

select throws_ok($$delete from meter.customers where external_id = 'ri-cust'$$, '42501', null,
                 'a customer cannot be deleted');
select throws_ok($$delete from meter.meters where code = 'ri.calls'$$, '42501', null,
                 'a meter cannot be deleted');
select throws_ok($$truncate meter.customers cascade$$, '42501', null, 'customers cannot be truncated');

select is_empty(
    $$select e.id from meter.events e
      where not exists (select 1 from meter.customers c where c.id = e.customer_id)
         or not exists (select 1 from meter.meters m where m.id = e.meter_id)$$,
    'every event points at an existing customer and meter');
select is_empty(
    $$select r.id from meter.event_redeliveries r
      where not exists (select 1 from meter.events e where e.id = r.event_id)$$,
    'every redelivery points at an existing event');

select * from finish();
rollback;
