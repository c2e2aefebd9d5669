-- meter.ingest_events(events, max_future, max_past): store a batch of usage events exactly once.
--
-- Guarantees
--   * Exactly once per (customer, idempotency_key), enforced by the UNIQUE constraint on
--     meter.events, not by a lookup: two racing transactions with the same key cannot both insert;
--     the loser waits for the winner's commit (ON CONFLICT) and reports `duplicate`.
--   * Per-event verdicts, never all-or-nothing: each input element gets one row, by position:
--       accepted  - stored now; event_id is the new row
--       duplicate - the key exists with the same content (meter, occurred_at, value, properties);
--                   event_id is the original row; nothing changes
--       conflict  - the key exists with different content; nothing changes
--       rejected  - unknown customer/meter or occurred_at outside the accepted window
--     A key repeated inside one request: the first occurrence decides, later ones are
--     duplicate or conflict against it.
--   * Time policy uses the database clock (now() of this transaction), so an application host with
--     a skewed clock cannot misjudge it: occurred_at must lie in [now() - max_past, now() + max_future].
--   * Durability is the caller's commit: the HTTP layer answers 2xx only after this call's
--     transaction committed with synchronous_commit = on.
--
-- Input: a JSON array of objects with the members customer, meter, idempotency_key, occurred_at
-- (timestamptz text), value (numeric text), properties (object). The HTTP layer has already
-- checked their syntax, lengths and limits; this function checks what needs the database.
--
-- Runs as its owner (SECURITY DEFINER) so that meter_ingest needs no table privileges.
create or replace function meter.ingest_events(
    p_events     jsonb,
    p_max_future interval default interval '5 minutes',
    p_max_past   interval default interval '35 days'
)
returns setof meter.ingest_verdict
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now       timestamptz := pg_catalog.now();
    v_new_ids   bigint[];
    v_verdicts  meter.ingest_verdict[];
begin
    if p_events is null or pg_catalog.jsonb_typeof(p_events) <> 'array' then
        raise exception 'meter.ingest_events: p_events must be a JSON array'
            using errcode = '22023';
    end if;

    -- Step 1: insert the first valid occurrence of every key. ON CONFLICT DO NOTHING leaves keys
    -- that already exist (or that a concurrent transaction is inserting: we wait for it) alone.
    with input as (
        select (e.ord - 1)::integer as ord, e.customer, e.meter, e.idempotency_key,
               e.occurred_at, coalesce(e.value, 1) as value,
               coalesce(e.properties, '{}'::jsonb) as properties
        from rows from (pg_catalog.jsonb_to_recordset(p_events)
                        as (customer text, meter text, idempotency_key text, occurred_at timestamptz,
                            value numeric, properties jsonb))
             with ordinality as e(customer, meter, idempotency_key, occurred_at, value, properties, ord)
    ),
    valid as (
        select distinct on (c.id, i.idempotency_key)
               c.id as customer_id, m.id as meter_id, i.*
        from input i
        join meter.customers c on c.external_id = i.customer
        join meter.meters m on m.code = i.meter
        where i.occurred_at between v_now - p_max_past and v_now + p_max_future
        order by c.id, i.idempotency_key, i.ord
    ),
    inserted as (
        insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at, value, properties)
        select customer_id, meter_id, idempotency_key, occurred_at, value, properties
        from valid
        order by ord
        on conflict (customer_id, idempotency_key) do nothing
        returning id
    )
    select pg_catalog.array_agg(id) into v_new_ids from inserted;

    -- Step 2: a fresh snapshot (new statement, READ COMMITTED) sees every row that made step 1
    -- skip a key, including rows committed by a concurrent request while we waited. Give every
    -- input element its verdict.
    with input as (
        select (e.ord - 1)::integer as ord, e.customer, e.meter, e.idempotency_key,
               e.occurred_at, coalesce(e.value, 1) as value,
               coalesce(e.properties, '{}'::jsonb) as properties
        from rows from (pg_catalog.jsonb_to_recordset(p_events)
                        as (customer text, meter text, idempotency_key text, occurred_at timestamptz,
                            value numeric, properties jsonb))
             with ordinality as e(customer, meter, idempotency_key, occurred_at, value, properties, ord)
    ),
    classified as (
        select i.*, c.id as customer_id, m.id as meter_id,
               case
                   when c.id is null then 'unknown_customer'
                   when m.id is null then 'unknown_meter'
                   when i.occurred_at > v_now + p_max_future then 'occurred_at_in_future'
                   when i.occurred_at < v_now - p_max_past then 'occurred_at_too_old'
               end as error,
               -- the first valid occurrence of its key within this request?
               pg_catalog.row_number() over (
                   partition by c.id, i.idempotency_key,
                                (c.id is null or m.id is null
                                 or i.occurred_at not between v_now - p_max_past and v_now + p_max_future)
                   order by i.ord) = 1 as first_of_key
        from input i
        left join meter.customers c on c.external_id = i.customer
        left join meter.meters m on m.code = i.meter
    ),
    -- A key that is already stored is judged against the stored event even when its occurred_at
    -- has since left the window: a late retry of a stored event is a duplicate, not an error.
    judged as (
        select k.ord,
               case when ev.id is null or k.error not like 'occurred_at%' then k.error end as error,
               case
                   when k.error is not null and (ev.id is null or k.error not like 'occurred_at%') then 'rejected'
                   when ev.id is null then 'rejected'  -- cannot happen while events are never deleted
                   when k.first_of_key and ev.id = any (coalesce(v_new_ids, '{}')) then 'accepted'
                   when ev.meter_id = k.meter_id and ev.occurred_at = k.occurred_at
                        and ev.value = k.value and ev.properties = k.properties then 'duplicate'
                   else 'conflict'
               end as status,
               ev.id as event_id,
               k.customer, k.meter
        from classified k
        left join meter.events ev
               on ev.customer_id = k.customer_id and ev.idempotency_key = k.idempotency_key
    )
    select pg_catalog.array_agg(
               row(j.ord, j.status,
                   case when j.status <> 'rejected' then j.event_id end,
                   case
                       when j.status = 'conflict' then 'idempotency_key_conflict'
                       when j.status = 'rejected' then coalesce(j.error, 'internal_inconsistency')
                   end,
                   case
                       when j.error = 'unknown_customer' then 'customer'
                       when j.error = 'unknown_meter' then 'meter'
                       when j.error like 'occurred_at%' then 'occurred_at'
                       when j.status in ('conflict', 'rejected') then 'idempotency_key'
                   end,
                   case
                       when j.error = 'unknown_customer' then
                           pg_catalog.format('no customer with external id %L; create it first', j.customer)
                       when j.error = 'unknown_meter' then
                           pg_catalog.format('no meter with code %L; create it first', j.meter)
                       when j.error = 'occurred_at_in_future' then
                           pg_catalog.format('occurred_at is more than %s ahead of the server clock', pg_catalog.justify_interval(p_max_future))
                       when j.error = 'occurred_at_too_old' then
                           pg_catalog.format('occurred_at is more than %s behind the server clock', pg_catalog.justify_interval(p_max_past))
                       when j.status = 'conflict' then
                           'this idempotency key was already used for an event with different content'
                       when j.status = 'rejected' then 'key neither inserted nor found; retry the request'
                   end
               )::meter.ingest_verdict
               order by j.ord)
      into v_verdicts
    from judged j;

    -- Step 3: keep an audit row for every redelivery (reconciliation counts duplicates from it).
    insert into meter.event_redeliveries (event_id, verdict, offered)
    select v.event_id, v.status,
           case when v.status = 'conflict' then p_events -> v.ord end
    from pg_catalog.unnest(v_verdicts) as v
    where v.status in ('duplicate', 'conflict');

    return query select * from pg_catalog.unnest(v_verdicts);
end;
$$;

comment on function meter.ingest_events(jsonb, interval, interval) is
    'Stores usage events exactly once per (customer, idempotency_key); one verdict per input element.';

revoke all on function meter.ingest_events(jsonb, interval, interval) from public;
grant execute on function meter.ingest_events(jsonb, interval, interval) to meter_ingest;
