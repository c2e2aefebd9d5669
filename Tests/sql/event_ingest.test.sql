-- meter.event_ingest(): one verdict per input element, exactly-once storage per
-- (customer, idempotency_key), duplicate vs conflict decided by content, the time window, and
-- the audit trail in meter.event_redeliveries.
--
-- Everything runs in one transaction that is rolled back, so now() is the same instant for the
-- test and for the function (it uses the transaction clock): window boundaries are exact.
begin;
select plan(47);

-- ---------------------------------------------------------------------------------------------
-- Fixtures: our own customers and meters, with names nothing else uses.
-- ---------------------------------------------------------------------------------------------
create temp table fx as
select meter.customer_upsert('tap-ie-alpha', 'TAP ingest alpha') as cust_a,
       meter.customer_upsert('tap-ie-beta', 'TAP ingest beta')   as cust_b,
       meter.meter_upsert('tap.ie.calls')                        as m_calls,
       meter.meter_upsert('tap.ie.bytes', 'sum', null, 'bytes', 'B') as m_bytes;

-- One input element; value and properties are left out when null, as a client may do.
create function pg_temp.ev(p_customer text, p_meter text, p_key text, p_occurred_at timestamptz,
                           p_value text default null, p_properties jsonb default null)
returns jsonb
language sql
as $$
    select pg_catalog.jsonb_build_object('customer', p_customer, 'meter', p_meter,
                                         'idempotency_key', p_key, 'occurred_at', p_occurred_at)
           || case when p_value is null then '{}'::jsonb
                   else pg_catalog.jsonb_build_object('value', p_value) end
           || case when p_properties is null then '{}'::jsonb
                   else pg_catalog.jsonb_build_object('properties', p_properties) end
$$;

-- An element as the audit row of a conflict keeps it (meter.event_ingest_arrays): the six
-- fields, occurred_at in UTC with microseconds, value as exact decimal text (absent = 1),
-- properties (absent = {}). Written here from the documented format, not from the function.
create function pg_temp.as_judged(e jsonb)
returns jsonb
language sql
as $$
    select pg_catalog.jsonb_build_object(
               'customer', e ->> 'customer', 'meter', e ->> 'meter',
               'idempotency_key', e ->> 'idempotency_key',
               'occurred_at', pg_catalog.to_char((e ->> 'occurred_at')::timestamptz at time zone 'UTC',
                                                 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'value', coalesce((e ->> 'value')::numeric, 1)::text,
               'properties', coalesce(e -> 'properties', '{}'::jsonb))
$$;

create temp table batch (name text primary key, b jsonb not null);

-- ---------------------------------------------------------------------------------------------
-- A fresh batch is accepted, one new id per event, stored exactly as sent.
-- ---------------------------------------------------------------------------------------------
insert into batch values ('first', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-k1', pg_catalog.now() - interval '1 hour'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-k2', pg_catalog.now() - interval '2 hours', '2.5'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-k3', pg_catalog.now() - interval '3 hours', null,
               '{"region": "eu", "tier": "gold"}'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-k4', pg_catalog.now() - interval '4 hours', '1')));

create temp table run1 as select * from meter.event_ingest((select b from batch where name = 'first'));

select results_eq(
    'select ord, status, code, field, reason from run1 order by ord',
    $$values (0, 'accepted', null::text, null::text, null::text),
             (1, 'accepted', null, null, null),
             (2, 'accepted', null, null, null),
             (3, 'accepted', null, null, null)$$,
    'a fresh batch: every element accepted, no code, field or reason');

select is((select pg_catalog.count(distinct event_id) from run1 where event_id is not null), 4::bigint,
          'each accepted element gets its own event id');

select results_eq(
    'select ord, event_id from run1 order by ord',
    $$select v.ord, e.id
      from (values (0, 'tap-ie-k1'), (1, 'tap-ie-k2'), (2, 'tap-ie-k3'), (3, 'tap-ie-k4')) v(ord, k)
      join meter.events e on e.customer_id = (select cust_a from fx) and e.idempotency_key = v.k
      order by v.ord$$,
    'the event_id of an accepted element is the row stored for its key');

select results_eq(
    $$select e.idempotency_key, m.code, e.occurred_at, e.value, e.properties
      from meter.events e join meter.meters m on m.id = e.meter_id
      where e.customer_id = (select cust_a from fx) order by e.idempotency_key$$,
    $$values ('tap-ie-k1', 'tap.ie.calls', pg_catalog.now() - interval '1 hour',  1::numeric,   '{}'::jsonb),
             ('tap-ie-k2', 'tap.ie.bytes', pg_catalog.now() - interval '2 hours', 2.5,          '{}'),
             ('tap-ie-k3', 'tap.ie.calls', pg_catalog.now() - interval '3 hours', 1,            '{"region": "eu", "tier": "gold"}'),
             ('tap-ie-k4', 'tap.ie.calls', pg_catalog.now() - interval '4 hours', 1,            '{}')$$,
    'stored as sent: value defaults to 1 and properties to {} when absent');

-- ---------------------------------------------------------------------------------------------
-- The same batch again: all duplicate, original ids, nothing stored, one audit row each.
-- ---------------------------------------------------------------------------------------------
create temp table events_after_first as select pg_catalog.count(*) as n from meter.events;
create temp table run2 as select * from meter.event_ingest((select b from batch where name = 'first'));

select results_eq(
    'select ord, status, event_id, code, field, reason from run2 order by ord',
    $$select ord, 'duplicate'::text, event_id, null::text, null::text, null::text from run1 order by ord$$,
    'the same batch again: every element duplicate, carrying the ORIGINAL event id');

select is((select pg_catalog.count(*) from meter.events), (select n from events_after_first),
          'a resent batch stores no row');

select results_eq(
    $$select event_id, verdict, offered from meter.event_redeliveries
      where event_id in (select event_id from run1) order by event_id$$,
    $$select event_id, 'duplicate'::text, null::jsonb from run1 order by event_id$$,
    'one duplicate redelivery row per resent element, offered left null for duplicates');

-- ---------------------------------------------------------------------------------------------
-- Same key, different content (value, occurred_at, properties, meter): conflict, nothing changes.
-- ---------------------------------------------------------------------------------------------
insert into batch values ('conflicting', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-k1', pg_catalog.now() - interval '1 hour', '2'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-k2', pg_catalog.now() - interval '2 hours' + interval '1 microsecond', '2.5'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-k3', pg_catalog.now() - interval '3 hours', null,
               '{"region": "us", "tier": "gold"}'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-k4', pg_catalog.now() - interval '4 hours', '1')));

create temp table alpha_before_conflicts as
select * from meter.events where customer_id = (select cust_a from fx);

create temp table run3 as select * from meter.event_ingest((select b from batch where name = 'conflicting'));

select results_eq(
    'select ord, status, event_id, code, field, reason from run3 order by ord',
    $$select ord, 'conflict'::text, event_id, 'idempotency_key_conflict'::text, 'idempotency_key'::text,
             'this idempotency key was already used for an event with different content'::text
      from run1 order by ord$$,
    'different value / occurred_at / properties / meter under a used key: conflict with the original id');

select results_eq(
    'select * from meter.events where customer_id = (select cust_a from fx) order by id',
    'select * from alpha_before_conflicts order by id',
    'conflicts leave the stored events untouched');

select results_eq(
    $$select event_id, offered from meter.event_redeliveries
      where verdict = 'conflict' and event_id in (select event_id from run1) order by event_id$$,
    $$select r.event_id, pg_temp.as_judged((select b from batch where name = 'conflicting') -> r.ord)
      from run3 r order by r.event_id$$,
    'one conflict redelivery row per conflicting element, with what was offered, as judged');

-- ---------------------------------------------------------------------------------------------
-- Content equality is by value: numeric 1.5 = 1.50, jsonb key order is irrelevant.
-- ---------------------------------------------------------------------------------------------
insert into batch values ('scaled', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-num', pg_catalog.now() - interval '5 minutes', '1.5'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-props', pg_catalog.now() - interval '5 minutes', null,
               '{"b": 2, "a": {"y": true, "x": null}}'::jsonb)));
insert into batch values ('rescaled', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-num', pg_catalog.now() - interval '5 minutes', '1.50'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-props', pg_catalog.now() - interval '5 minutes', null,
               '{"a": {"x": null, "y": true}, "b": 2}'::jsonb),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-num', pg_catalog.now() - interval '5 minutes', '1.500000000000')));

create temp table run_n1 as select * from meter.event_ingest((select b from batch where name = 'scaled'));
create temp table run_n2 as select * from meter.event_ingest((select b from batch where name = 'rescaled'));

select results_eq(
    'select ord, status from run_n1 order by ord',
    $$values (0, 'accepted'::text), (1, 'accepted')$$,
    'the first delivery of 1.5 and of the nested properties is accepted');

select results_eq(
    'select ord, status, event_id from run_n2 order by ord',
    $$select v.ord, 'duplicate'::text, r.event_id
      from (values (0, 0), (1, 1), (2, 0)) v(ord, first_ord) join run_n1 r on r.ord = v.first_ord
      order by v.ord$$,
    '1.50 and 1.500000000000 equal 1.5, and reordered jsonb keys are equal: duplicates, not conflicts');

select is((select value::text from meter.events
           where customer_id = (select cust_a from fx) and idempotency_key = 'tap-ie-num'),
          '1.5', 'the stored value keeps the first delivery''s exact text');

-- ---------------------------------------------------------------------------------------------
-- A key repeated inside one batch: the first occurrence decides, later ones are judged against it.
-- ---------------------------------------------------------------------------------------------
insert into batch values ('repeats', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-rep-a', pg_catalog.now() - interval '10 minutes', '3'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-rep-a', pg_catalog.now() - interval '10 minutes', '3.0'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-rep-b', pg_catalog.now() - interval '10 minutes', '3'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-rep-b', pg_catalog.now() - interval '10 minutes', '4'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-rep-c', pg_catalog.now() - interval '10 minutes', null, '{"x": 1}'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-rep-c', pg_catalog.now() - interval '10 minutes', null, '{"x": 2}')));

create temp table run_r as select * from meter.event_ingest((select b from batch where name = 'repeats'));

select results_eq(
    'select ord, status, code from run_r order by ord',
    $$values (0, 'accepted'::text, null::text), (1, 'duplicate', null),
             (2, 'accepted', null), (3, 'conflict', 'idempotency_key_conflict'),
             (4, 'accepted', null), (5, 'conflict', 'idempotency_key_conflict')$$,
    'repeated key in one batch: first accepted, then duplicate or conflict by content');

select results_eq(
    'select ord, event_id from run_r where ord in (1, 3, 5) order by ord',
    'select ord + 1, event_id from run_r where ord in (0, 2, 4) order by ord',
    'a later occurrence carries the id of the first one');

select results_eq(
    $$select idempotency_key, value, properties from meter.events
      where customer_id = (select cust_a from fx) and idempotency_key like 'tap-ie-rep-%'
      order by idempotency_key$$,
    $$values ('tap-ie-rep-a', 3::numeric, '{}'::jsonb), ('tap-ie-rep-b', 3, '{}'), ('tap-ie-rep-c', 1, '{"x": 1}')$$,
    'one row per repeated key, holding the first occurrence''s content');

select results_eq(
    $$select verdict, offered from meter.event_redeliveries
      where event_id in (select event_id from run_r) order by id$$,
    $$values ('duplicate'::text, null::jsonb),
             ('conflict', pg_temp.as_judged((select b from batch where name = 'repeats') -> 3)),
             ('conflict', pg_temp.as_judged((select b from batch where name = 'repeats') -> 5))$$,
    'in-batch repeats are audited like any redelivery');

-- ---------------------------------------------------------------------------------------------
-- Unknown customer or meter: rejected with a stable code and the field to blame.
-- ---------------------------------------------------------------------------------------------
insert into batch values ('unknown', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-nobody', 'tap.ie.calls', 'tap-ie-u1', pg_catalog.now()),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.nometer', 'tap-ie-u2', pg_catalog.now()),
    pg_temp.ev('tap-ie-nobody', 'tap.ie.nometer', 'tap-ie-u3', pg_catalog.now())));

create temp table run_u as select * from meter.event_ingest((select b from batch where name = 'unknown'));

select results_eq(
    'select ord, status, event_id, code, field, reason from run_u order by ord',
    $$values (0, 'rejected'::text, null::bigint, 'unknown_customer'::text, 'customer'::text,
              'no customer with external id ''tap-ie-nobody''; create it first'::text),
             (1, 'rejected', null, 'unknown_meter', 'meter',
              'no meter with code ''tap.ie.nometer''; create it first'),
             (2, 'rejected', null, 'unknown_customer', 'customer',
              'no customer with external id ''tap-ie-nobody''; create it first')$$,
    'unknown customer / unknown meter are rejected with code and field (customer checked first)');

select is((select pg_catalog.count(*) from meter.events where idempotency_key in ('tap-ie-u1', 'tap-ie-u2', 'tap-ie-u3')),
          0::bigint, 'rejected elements store nothing');

-- ---------------------------------------------------------------------------------------------
-- The time window [now() - max_past, now() + max_future], bounds included.
-- ---------------------------------------------------------------------------------------------
insert into batch values ('window', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-w1', pg_catalog.now() + interval '1 minute'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-w2', pg_catalog.now() + interval '1 minute 0.000001 second'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-w3', pg_catalog.now() - interval '1 day'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-w4', pg_catalog.now() - interval '1 day 0.000001 second')));

select results_eq(
    $$select ord, status, code, field, reason
      from meter.event_ingest((select b from batch where name = 'window'), interval '1 minute', interval '1 day')
      order by ord$$,
    $$values (0, 'accepted'::text, null::text, null::text, null::text),
             (1, 'rejected', 'occurred_at_in_future', 'occurred_at',
              'occurred_at is more than 00:01:00 ahead of the server clock'),
             (2, 'accepted', null, null, null),
             (3, 'rejected', 'occurred_at_too_old', 'occurred_at',
              'occurred_at is more than 1 day behind the server clock')$$,
    'occurred_at exactly on a bound is accepted; one microsecond beyond is rejected');

insert into batch values ('default_window', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-d1', pg_catalog.now() + interval '5 minutes'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-d2', pg_catalog.now() + interval '5 minutes 1 second'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-d3', pg_catalog.now() - interval '35 days'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-d4', pg_catalog.now() - interval '35 days 1 second')));

select results_eq(
    $$select ord, status, code, reason from meter.event_ingest((select b from batch where name = 'default_window')) order by ord$$,
    $$values (0, 'accepted'::text, null::text, null::text),
             (1, 'rejected', 'occurred_at_in_future', 'occurred_at is more than 00:05:00 ahead of the server clock'),
             (2, 'accepted', null, null),
             (3, 'rejected', 'occurred_at_too_old', 'occurred_at is more than 35 days behind the server clock')$$,
    'default window: 5 minutes ahead, 35 days behind (reasons state the window as configured)');

-- ---------------------------------------------------------------------------------------------
-- A late (or early) retry of an already stored key is judged against the stored event.
-- ---------------------------------------------------------------------------------------------
insert into batch values ('late_first', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-late', pg_catalog.now() - interval '40 days', '7'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-early', pg_catalog.now() + interval '1 day', '8')));
insert into batch values ('late_retry', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-late', pg_catalog.now() - interval '40 days', '7'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-late', pg_catalog.now() - interval '40 days', '9'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-late-new', pg_catalog.now() - interval '40 days', '7'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.bytes', 'tap-ie-early', pg_catalog.now() + interval '1 day', '8')));

create temp table run_l1 as
select * from meter.event_ingest((select b from batch where name = 'late_first'), interval '2 days', interval '100 days');
create temp table run_l2 as
select * from meter.event_ingest((select b from batch where name = 'late_retry'), interval '5 minutes', interval '1 day');

select results_eq(
    'select ord, status from run_l1 order by ord',
    $$values (0, 'accepted'::text), (1, 'accepted')$$,
    'stored with a wide window: 40 days old and 1 day ahead are accepted');

select results_eq(
    'select ord, status, event_id, code from run_l2 order by ord',
    $$values (0, 'duplicate'::text, (select event_id from run_l1 where ord = 0), null::text),
             (1, 'conflict', (select event_id from run_l1 where ord = 0), 'idempotency_key_conflict'),
             (2, 'rejected', null, 'occurred_at_too_old'),
             (3, 'duplicate', (select event_id from run_l1 where ord = 1), null)$$,
    'retry outside a narrow window: stored key -> duplicate/conflict with the original id; new key -> rejected');

-- ---------------------------------------------------------------------------------------------
-- Idempotency keys are scoped per customer.
-- ---------------------------------------------------------------------------------------------
insert into batch values ('two_customers', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-shared', pg_catalog.now()),
    pg_temp.ev('tap-ie-beta', 'tap.ie.calls', 'tap-ie-shared', pg_catalog.now())));

create temp table run_2c as select * from meter.event_ingest((select b from batch where name = 'two_customers'));

select results_eq(
    'select ord, status from run_2c order by ord',
    $$values (0, 'accepted'::text), (1, 'accepted')$$,
    'the same idempotency key for two customers: two accepted events');

select results_eq(
    $$select c.external_id, e.id from meter.events e join meter.customers c on c.id = e.customer_id
      where e.idempotency_key = 'tap-ie-shared' order by c.external_id$$,
    $$select v.c, r.event_id from (values (0, 'tap-ie-alpha'), (1, 'tap-ie-beta')) v(ord, c)
      join run_2c r on r.ord = v.ord order by v.c$$,
    'two rows, one per customer, with distinct ids');

-- ---------------------------------------------------------------------------------------------
-- Verdicts come back in input order, ord = 0 .. n-1, whatever the mix.
-- ---------------------------------------------------------------------------------------------
insert into batch values ('mixed', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-nobody', 'tap.ie.calls', 'tap-ie-m1', pg_catalog.now()),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-m2', pg_catalog.now()),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-k1', pg_catalog.now() - interval '1 hour'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-k4', pg_catalog.now() - interval '4 hours', '5'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-m3', pg_catalog.now()),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-m4', pg_catalog.now() - interval '1 year')));

select results_eq(
    $$select ord, status from meter.event_ingest((select b from batch where name = 'mixed'))$$,
    $$values (0, 'rejected'::text), (1, 'accepted'), (2, 'duplicate'), (3, 'conflict'), (4, 'accepted'), (5, 'rejected')$$,
    'verdict rows follow input order (no ORDER BY needed), ord 0..n-1');

-- ---------------------------------------------------------------------------------------------
-- Argument shape.
-- ---------------------------------------------------------------------------------------------
select throws_ok(
    $$select * from meter.event_ingest('{"customer": "tap-ie-alpha"}'::jsonb)$$,
    '22023', 'meter.event_ingest: p_events must be a JSON array',
    'a JSON object instead of an array raises 22023');

select throws_ok(
    $$select * from meter.event_ingest(null::jsonb)$$,
    '22023', 'meter.event_ingest: p_events must be a JSON array',
    'NULL raises 22023');

select throws_ok(
    $$select * from meter.event_ingest('"[]"'::jsonb)$$,
    '22023', 'meter.event_ingest: p_events must be a JSON array',
    'a JSON string raises 22023');

select is_empty(
    $$select * from meter.event_ingest('[]'::jsonb)$$,
    'an empty array yields no verdicts');

-- ---------------------------------------------------------------------------------------------
-- The table's own constraints (the last line of defence behind the HTTP layer's checks).
-- ---------------------------------------------------------------------------------------------
select throws_like(
    $$insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at, value)
      values ((select cust_a from fx), (select m_calls from fx), 'tap-ie-neg', pg_catalog.now(), -1)$$,
    '%new row for relation "events_%" violates check constraint "events_value_range"',
    'a negative value is refused (23514)');

select throws_like(
    $$insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at, value)
      values ((select cust_a from fx), (select m_calls from fx), 'tap-ie-scale', pg_catalog.now(), 0.0000000000001)$$,
    '%new row for relation "events_%" violates check constraint "events_value_range"',
    'more than 12 fractional digits is refused (23514)');

select throws_like(
    $$insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at, value)
      values ((select cust_a from fx), (select m_calls from fx), 'tap-ie-big', pg_catalog.now(), 1e26)$$,
    '%new row for relation "events_%" violates check constraint "events_value_range"',
    'a value of 1e26 or more is refused (23514)');

select throws_like(
    $$insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at, properties)
      values ((select cust_a from fx), (select m_calls from fx), 'tap-ie-arr', pg_catalog.now(), '[]')$$,
    '%new row for relation "events_%" violates check constraint "events_properties_object"',
    'properties must be a JSON object (23514)');

select throws_like(
    $$insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at)
      values ((select cust_a from fx), (select m_calls from fx), '', pg_catalog.now())$$,
    '%new row for relation "events_%" violates check constraint "events_key_length"',
    'an empty idempotency key is refused (23514)');

-- ---------------------------------------------------------------------------------------------
-- A key repeated in one batch where one occurrence is outside the window. A batch must behave
-- like its elements sent one by one in input order:
--   * out-of-window element BEFORE the first in-window occurrence of a key that did not exist
--     before the request: nothing is stored yet, so it is rejected for its occurred_at (not a
--     conflict against a row that only a later element creates, and no redelivery audit row);
--   * out-of-window element AFTER it: the key is now stored, so it is judged against the stored
--     event (here: conflict), like a late retry;
--   * never two "accepted" verdicts for one stored event.
-- ---------------------------------------------------------------------------------------------
insert into batch values ('window_repeats', pg_catalog.jsonb_build_array(
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-wr-a', pg_catalog.now() - interval '40 days'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-wr-a', pg_catalog.now() - interval '1 hour'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-wr-b', pg_catalog.now() - interval '1 hour'),
    pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-wr-b', pg_catalog.now() + interval '1 day')));

create temp table run_wr as select * from meter.event_ingest((select b from batch where name = 'window_repeats'));

select results_eq(
    'select ord, status, code from run_wr order by ord',
    $$values (0, 'rejected'::text, 'occurred_at_too_old'::text), (1, 'accepted', null),
             (2, 'accepted', null), (3, 'conflict', 'idempotency_key_conflict')$$,
    'out-of-window repeat of a key stored by the same request: rejected before it, conflict after it');

select is((select pg_catalog.count(*) from run_wr where status = 'accepted'),
          (select pg_catalog.count(distinct event_id) from run_wr where status = 'accepted'),
          'never two accepted verdicts for one stored event');

select results_eq(
    $$select idempotency_key, occurred_at from meter.events
      where customer_id = (select cust_a from fx) and idempotency_key like 'tap-ie-wr-%' order by idempotency_key$$,
    $$values ('tap-ie-wr-a', pg_catalog.now() - interval '1 hour'), ('tap-ie-wr-b', pg_catalog.now() - interval '1 hour')$$,
    'only the in-window occurrences are stored');

select results_eq(
    $$select verdict, offered from meter.event_redeliveries
      where event_id in (select event_id from run_wr where event_id is not null) order by id$$,
    $$values ('conflict'::text, pg_temp.as_judged((select b from batch where name = 'window_repeats') -> 3))$$,
    'only the later out-of-window occurrence is audited (as a conflict); the earlier one is no redelivery');

-- ---------------------------------------------------------------------------------------------
-- The typed form (the service's call): the same verdicts; arrays of different lengths refused.
-- ---------------------------------------------------------------------------------------------
select results_eq(
    $$select ord, status, code from meter.event_ingest_arrays(
          array['tap-ie-alpha', 'tap-ie-alpha'], array['tap.ie.calls', 'tap.ie.calls'],
          array['tap-ie-arr-1', 'tap-ie-k1'],
          array[pg_catalog.now() - interval '5 minutes', pg_catalog.now() - interval '1 hour'],
          array[null, null]::numeric[], array[null, null]::jsonb[])$$,
    $$values (0, 'accepted'::text, null::text), (1, 'duplicate', null)$$,
    'event_ingest_arrays: a new key beside a stored one, both valid (the plain INSERT meets the stored key and is undone; the general path stores the new one)');

select results_eq(
    $$select ord, status, code from meter.event_ingest_arrays(
          array['tap-ie-alpha', 'tap-ie-nobody'], array['tap.ie.calls', 'tap.ie.calls'],
          array['tap-ie-arr-2', 'tap-ie-arr-3'], array[pg_catalog.now(), pg_catalog.now()],
          array[1, 1]::numeric[], array['{}', '{}']::jsonb[])$$,
    $$values (0, 'accepted'::text, null::text), (1, 'rejected', 'unknown_customer')$$,
    'event_ingest_arrays: a new key beside an unknown customer (the all-or-nothing INSERT stores nothing; the general path decides each)');

select is((select pg_catalog.count(*) from meter.events where idempotency_key in ('tap-ie-arr-1', 'tap-ie-arr-2', 'tap-ie-arr-3')),
          2::bigint, 'event_ingest_arrays: each accepted element stored once, the rejected one not');

select is((select value from meter.events where idempotency_key = 'tap-ie-arr-1'), 1::numeric,
          'event_ingest_arrays: a NULL value is stored as 1');

select throws_ok(
    $$select * from meter.event_ingest_arrays(array['a'], array['b'], array['c', 'd'],
          array[pg_catalog.now()], array[1]::numeric[], array['{}']::jsonb[])$$,
    '22023', null, 'event_ingest_arrays: arrays of different lengths are refused (22023)');
select throws_ok(
    $$select * from meter.event_ingest_arrays('[0:0]={tap-ie-alpha}'::text[], array['tap.ie.calls'], array['tap-ie-arr-4'],
          array[pg_catalog.now()], array[1]::numeric[], array['{}']::jsonb[])$$,
    '22023', null, 'event_ingest_arrays: an array not indexed from 1 is refused (22023), not read askew');
select results_eq(
    $$select ord, status, code from meter.event_ingest(pg_catalog.jsonb_build_array(
          pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-arr-5', pg_catalog.now()),
          pg_temp.ev('tap-ie-alpha', 'tap.ie.calls', 'tap-ie-arr-5', pg_catalog.now(), '-1')))$$,
    $$values (0, 'accepted'::text, null::text), (1, 'conflict', 'idempotency_key_conflict')$$,
    'a repeated key whose later copy breaks a CHECK of meter.events (value -1): the first accepted, the copy a conflict, as before the plain INSERT path');
select is((select pg_catalog.count(*) from meter.event_ingest('[]'::jsonb)), 0::bigint, 'an empty batch: no verdicts, no error');

select * from finish();
rollback;
