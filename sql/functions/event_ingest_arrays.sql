-- meter.event_ingest_arrays(customers, meters, keys, occurred_at, values, properties, max_future,
-- max_past, api_key_hash): store a batch of usage events exactly once. The service's call; the
-- events arrive as parallel typed arrays, element i of each array being event i.
--
-- Guarantees
--   * Exactly once per (customer, idempotency_key), enforced by the UNIQUE constraint on
--     meter.events, not by a lookup: two racing transactions with the same key cannot both insert;
--     the loser waits for the winner's commit and reports `duplicate`.
--   * Per-event verdicts, never all-or-nothing: each input element gets one row, by position
--     (ord, from 0):
--       accepted  - stored now; event_id is the new row
--       duplicate - the key exists with the same content (meter, occurred_at, value, properties);
--                   event_id is the original row; nothing changes
--       conflict  - the key exists with different content; nothing changes
--       rejected  - unknown customer/meter, occurred_at outside the accepted window, or a
--                   customer the key may not act for (customer_not_allowed)
--     A key repeated inside one request: the first occurrence decides, later ones are
--     duplicate or conflict against it.
--   * Time policy uses the database clock (now() of this transaction), so an application host with
--     a skewed clock cannot misjudge it: occurred_at must lie in [now() - max_past, now() + max_future].
--   * Sends no NOTIFY. A NOTIFY takes the cluster-wide notify-queue lock from its pre-commit
--     step until the commit's WAL flush, which serialized every ingest commit behind one fsync
--     (docs/benchmarks.md, "Ingest commit path"). The service wakes its own rollup loop after a
--     commit it made and NOTIFYs meter_events for other processes at most every 100 ms, outside
--     any ingest transaction (EventsNotifier); the rollup polls every second anyway, which is
--     what a direct caller of this function (psql, a script) relies on.
--   * Durability is the caller's commit: the HTTP layer answers 2xx only after this call's
--     transaction committed with synchronous_commit = on.
--
-- Input: six arrays of one length (else 22023): customer external ids, meter codes, idempotency
-- keys, occurred_at, values (NULL = 1) and properties (JSON objects; NULL = {}). Typed arrays, not
-- a JSON document: the service has already parsed and checked every event (syntax, lengths,
-- limits), so it sends the checked fields as they are and Postgres parses each value once, by its
-- type (a JSON batch was parsed a second time as jsonb, then converted field by field;
-- docs/decisions.md 119). This function checks what needs the database. meter.event_ingest(jsonb)
-- is the same call for callers holding a JSON array (psql, scripts).
--
-- api_key_hash: the SHA-256 of the caller's bearer token (the service sends the hash, never the
-- token). When given (the HTTP service always gives it, so that authentication and ingest take
-- one round trip), it must be a live API key, else SQLSTATE 28000 is raised and nothing is stored;
-- a key without the ingest scope raises 42501 (insufficient_scope), and the events of customers
-- outside a key's customer list are rejected one by one (customer_not_allowed).
-- The check is meter.api_key_authenticate()'s, inlined: a nested call would cost a search_path
-- switch per request on the hottest path.
--
-- How a batch is stored: a plain INSERT of the batch's new keys first, in a subtransaction; only
-- when it meets a stored key (unique_violation, the rare case: a retry) is it undone and run again
-- with ON CONFLICT DO NOTHING. ON CONFLICT makes every row a speculative insertion (a second
-- index descent and a second WAL record per row): +50 % on an all-new batch (decision 119).
--
-- The audit row of a conflicting element (meter.event_redeliveries.offered) holds the event as
-- judged: the six fields, occurred_at in UTC, value as exact decimal text.
--
-- Runs as its owner (SECURITY DEFINER) so that meter_ingest needs no table privileges.
create or replace function meter.event_ingest_arrays(
    p_customers    text[],
    p_meters       text[],
    p_keys         text[],
    p_occurred_at  timestamptz[],
    p_values       numeric[],
    p_properties   jsonb[],
    p_max_future   interval default interval '5 minutes',
    p_max_past     interval default interval '35 days',
    p_api_key_hash bytea default null
)
returns setof meter.ingest_verdict
language plpgsql
volatile
security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now      timestamptz := pg_catalog.now();
    v_n        integer := pg_catalog.cardinality(p_customers);
    v_verdicts meter.ingest_verdict[];
    v_one      meter.ingest_verdict;
    v_id       bigint;
    v_scopes   text[];
    v_allowed  bigint[];  -- the key's customers; NULL = every customer
    -- Per element (index = ord + 1), from step 1.
    v_customer_ids bigint[];
    v_meter_ids    bigint[];
    v_errors       text[];
    v_first        boolean[];  -- the first valid occurrence of its key: the one inserted
    -- The rows step 2 inserted.
    v_new_ids       bigint[];
    v_new_customers bigint[];
    v_new_keys      text[];
begin
    if v_n is null
       or pg_catalog.cardinality(p_meters) is distinct from v_n
       or pg_catalog.cardinality(p_keys) is distinct from v_n
       or pg_catalog.cardinality(p_occurred_at) is distinct from v_n
       or pg_catalog.cardinality(p_values) is distinct from v_n
       or pg_catalog.cardinality(p_properties) is distinct from v_n then
        raise exception 'meter.event_ingest_arrays: the six arrays must be given and have one length'
            using errcode = '22023';
    end if;

    -- Durability is per transaction, not per session: behind a transaction-pooling proxy a
    -- session setting would not follow. Never commit an ingest with synchronous_commit = off.
    if pg_catalog.current_setting('synchronous_commit') = 'off' then
        perform pg_catalog.set_config('synchronous_commit', 'on', true);
    end if;
    -- Fast path for the most common request: one new, valid event from a live key, stored by one
    -- INSERT ... SELECT that also checks the key (one statement on the hottest path). Anything
    -- else (unknown key, customer or meter, out of window, key already stored) inserts nothing
    -- here and falls through to the checks and the general path below, which alone decide those
    -- verdicts: the fast path only ever answers "accepted".
    if v_n = 1 then
        insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at, value, properties)
        select c.id, m.id, p_keys[1], p_occurred_at[1],
               coalesce(p_values[1], 1), coalesce(p_properties[1], '{}'::jsonb)
        from meter.customers c, meter.meters m
        where c.external_id = p_customers[1]
          and m.code = p_meters[1]
          and p_occurred_at[1] between v_now - p_max_past and v_now + p_max_future
          and (p_api_key_hash is null
               or exists (select 1 from meter.api_keys k
                          where k.key_hash = p_api_key_hash
                            and k.revoked_at is null
                            and 'ingest' = any (k.scopes)
                            and (k.customer_ids is null or c.id = any (k.customer_ids))))
        on conflict (customer_id, idempotency_key) do nothing
        returning id into v_id;
        if v_id is not null then
            v_one := row(0, 'accepted', v_id, null, null, null)::meter.ingest_verdict;
            return next v_one;
            return;
        end if;
    end if;

    -- The key (the same check as meter.api_key_authenticate(), inlined: a nested call would cost
    -- a search_path switch per request).
    if p_api_key_hash is not null then
        select k.scopes, k.customer_ids into v_scopes, v_allowed from meter.api_keys k
        where k.key_hash = p_api_key_hash
          and k.revoked_at is null;
        if not found then
            raise exception 'unknown or revoked API key' using errcode = '28000';
        end if;
        if not ('ingest' = any (v_scopes)) then
            raise exception 'this API key may not ingest events (its scopes: %)', pg_catalog.array_to_string(v_scopes, ', ')
                using errcode = '42501', hint = 'create a key with the ingest scope: meterctl keys create --scope ingest';
        end if;
    end if;

    -- Step 1: classify every element: its customer and meter ids, the error that needs no stored
    -- row, and whether it is the first valid occurrence of its key in this call.
    select pg_catalog.array_agg(f.customer_id order by f.ord),
           pg_catalog.array_agg(f.meter_id order by f.ord),
           pg_catalog.array_agg(f.error order by f.ord),
           pg_catalog.array_agg(f.first_of_key order by f.ord)
      into v_customer_ids, v_meter_ids, v_errors, v_first
    from (
        select k.*,
               k.error is null
               and pg_catalog.row_number() over (
                       partition by k.customer_id, k.idempotency_key, k.error is null
                       order by k.ord) = 1 as first_of_key
        from (
            select i.ord, i.idempotency_key, c.id as customer_id, m.id as meter_id,
                   case
                       when c.id is null then 'unknown_customer'
                       when v_allowed is not null and not (c.id = any (v_allowed)) then 'customer_not_allowed'
                       when m.id is null then 'unknown_meter'
                       when i.occurred_at > v_now + p_max_future then 'occurred_at_in_future'
                       when i.occurred_at < v_now - p_max_past then 'occurred_at_too_old'
                   end as error
            from rows from (pg_catalog.unnest(p_customers), pg_catalog.unnest(p_meters),
                            pg_catalog.unnest(p_keys), pg_catalog.unnest(p_occurred_at))
                 with ordinality as i(customer, meter, idempotency_key, occurred_at, ord)
            left join meter.customers c on c.external_id = i.customer
            left join meter.meters m on m.code = i.meter
        ) as k
    ) as f;

    -- Step 2: insert the first valid occurrence of each key. Sorted by the unique key: one global
    -- lock order, so two batches inserting overlapping keys cannot deadlock while each waits on
    -- a key the other holds. A plain INSERT first (all keys new: the common case); a stored key
    -- makes it fail with unique_violation, after waiting for the transaction holding that key if
    -- it was in flight, and the same INSERT runs again skipping stored keys (ON CONFLICT DO
    -- NOTHING, which costs every row a speculative insertion). The two statements differ only by
    -- that clause.
    begin
        with inserted as (
            insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at, value, properties)
            select v_customer_ids[e.ord], v_meter_ids[e.ord], e.idempotency_key, e.occurred_at,
                   coalesce(e.value, 1), coalesce(e.properties, '{}'::jsonb)
            from rows from (pg_catalog.unnest(p_keys), pg_catalog.unnest(p_occurred_at),
                            pg_catalog.unnest(p_values), pg_catalog.unnest(p_properties))
                 with ordinality as e(idempotency_key, occurred_at, value, properties, ord)
            where v_first[e.ord]
            order by v_customer_ids[e.ord], e.idempotency_key
            returning id, customer_id, idempotency_key
        )
        select pg_catalog.array_agg(id), pg_catalog.array_agg(customer_id), pg_catalog.array_agg(idempotency_key)
          into v_new_ids, v_new_customers, v_new_keys
        from inserted;
    exception when unique_violation then
        with inserted as (
            insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at, value, properties)
            select v_customer_ids[e.ord], v_meter_ids[e.ord], e.idempotency_key, e.occurred_at,
                   coalesce(e.value, 1), coalesce(e.properties, '{}'::jsonb)
            from rows from (pg_catalog.unnest(p_keys), pg_catalog.unnest(p_occurred_at),
                            pg_catalog.unnest(p_values), pg_catalog.unnest(p_properties))
                 with ordinality as e(idempotency_key, occurred_at, value, properties, ord)
            where v_first[e.ord]
            order by v_customer_ids[e.ord], e.idempotency_key
            on conflict (customer_id, idempotency_key) do nothing
            returning id, customer_id, idempotency_key
        )
        select pg_catalog.array_agg(id), pg_catalog.array_agg(customer_id), pg_catalog.array_agg(idempotency_key)
          into v_new_ids, v_new_customers, v_new_keys
        from inserted;
    end;

    -- Step 3: a verdict for every element that this call can decide alone: accepted, or
    -- rejected for a reason that needs no stored row. Elements left with status NULL
    -- ("pending") need a look at the stored row: step 4.
    select pg_catalog.array_agg(
               row(e.ord - 1,
                   case
                       when v_first[e.ord] and n.id is not null then 'accepted'
                       when v_errors[e.ord] in ('unknown_customer', 'unknown_meter', 'customer_not_allowed') then 'rejected'
                       -- an out-of-window element may be the retry of a stored event: pending
                   end,
                   n.id, v_errors[e.ord],
                   case v_errors[e.ord]
                       when 'unknown_customer' then 'customer'
                       when 'customer_not_allowed' then 'customer'
                       when 'unknown_meter' then 'meter'
                       when 'occurred_at_in_future' then 'occurred_at'
                       when 'occurred_at_too_old' then 'occurred_at'
                   end,
                   case v_errors[e.ord]
                       when 'unknown_customer' then
                           pg_catalog.format('no customer with external id %L; create it first', e.customer)
                       when 'customer_not_allowed' then
                           pg_catalog.format('this API key may not act for customer %L', e.customer)
                       when 'unknown_meter' then
                           pg_catalog.format('no meter with code %L; create it first', e.meter)
                       when 'occurred_at_in_future' then
                           pg_catalog.format('occurred_at is more than %s ahead of the server clock',
                                             pg_catalog.justify_hours(p_max_future))
                       when 'occurred_at_too_old' then
                           pg_catalog.format('occurred_at is more than %s behind the server clock',
                                             pg_catalog.justify_hours(p_max_past))
                   end
               )::meter.ingest_verdict
               order by e.ord)
      into v_verdicts
    from rows from (pg_catalog.unnest(p_customers), pg_catalog.unnest(p_meters), pg_catalog.unnest(p_keys))
         with ordinality as e(customer, meter, idempotency_key, ord)
    left join rows from (pg_catalog.unnest(v_new_ids), pg_catalog.unnest(v_new_customers),
                         pg_catalog.unnest(v_new_keys)) as n(id, customer_id, idempotency_key)
           on v_first[e.ord] and n.customer_id = v_customer_ids[e.ord] and n.idempotency_key = e.idempotency_key;

    -- Step 4, only when something is pending (the common all-new batch skips it). A new statement
    -- takes a fresh snapshot (READ COMMITTED), so it sees every row that made step 2 skip a key,
    -- including rows a concurrent request committed while we waited. Pending elements are judged
    -- against the stored event: same content = duplicate, else conflict. An out-of-window element
    -- whose key is stored is judged the same way (a late retry is a duplicate, not an error).
    if exists (select 1 from pg_catalog.unnest(v_verdicts) v where v.status is null) then
        select pg_catalog.array_agg(
                   case
                       when v.status is not null then v
                       -- out of window and not a redelivery: nothing stored under its key before
                       -- this call, or only by a later element of it (a batch behaves as its
                       -- elements sent one by one, in order)
                       when v.code is not null and (ev.id is null or acc.ord > v.ord) then
                           row(v.ord, 'rejected', null, v.code, v.field, v.reason)::meter.ingest_verdict
                       when ev.id is null then
                           -- cannot happen while events are never deleted; fail loudly if it does
                           row(v.ord, 'rejected', null, 'internal_inconsistency', 'idempotency_key',
                               'key neither inserted nor found; retry the request')::meter.ingest_verdict
                       when ev.meter_id = v_meter_ids[v.ord + 1]
                            and ev.occurred_at = p_occurred_at[v.ord + 1]
                            and ev.value = coalesce(p_values[v.ord + 1], 1)
                            and ev.properties = coalesce(p_properties[v.ord + 1], '{}'::jsonb) then
                           row(v.ord, 'duplicate', ev.id, null, null, null)::meter.ingest_verdict
                       else
                           row(v.ord, 'conflict', ev.id, 'idempotency_key_conflict', 'idempotency_key',
                               'this idempotency key was already used for an event with different content'
                              )::meter.ingest_verdict
                   end
                   order by v.ord)
          into v_verdicts
        from pg_catalog.unnest(v_verdicts) as v
        left join meter.events ev
               on v.status is null
              and ev.customer_id = v_customer_ids[v.ord + 1]
              and ev.idempotency_key = p_keys[v.ord + 1]
        left join lateral (
            select a.ord from pg_catalog.unnest(v_verdicts) as a
            where a.status = 'accepted' and a.event_id = ev.id
        ) as acc on true;

        -- Step 5: an audit row for every redelivery (reconciliation counts duplicates from it);
        -- a conflict keeps the event as offered (as judged: occurred_at in UTC, exact value).
        insert into meter.event_redeliveries (event_id, verdict, offered)
        select v.event_id, v.status,
               case when v.status = 'conflict' then
                   pg_catalog.jsonb_build_object(
                       'customer', p_customers[v.ord + 1],
                       'meter', p_meters[v.ord + 1],
                       'idempotency_key', p_keys[v.ord + 1],
                       'occurred_at', pg_catalog.to_char(p_occurred_at[v.ord + 1] at time zone 'UTC',
                                                         'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                       'value', coalesce(p_values[v.ord + 1], 1)::text,
                       'properties', coalesce(p_properties[v.ord + 1], '{}'::jsonb))
               end
        from pg_catalog.unnest(v_verdicts) as v
        where v.status in ('duplicate', 'conflict');
    end if;

    return query select * from pg_catalog.unnest(v_verdicts);
end;
$$;

comment on function meter.event_ingest_arrays(text[], text[], text[], timestamptz[], numeric[], jsonb[], interval, interval, bytea) is
    'Stores usage events given as parallel arrays exactly once per (customer, idempotency_key); one verdict per element. The service''s ingest call.';

revoke all on function meter.event_ingest_arrays(text[], text[], text[], timestamptz[], numeric[], jsonb[], interval, interval, bytea) from public;
grant execute on function meter.event_ingest_arrays(text[], text[], text[], timestamptz[], numeric[], jsonb[], interval, interval, bytea) to meter_ingest;
