-- meter.event_ingest_arrays(customers, meters, keys, occurred_at, values, properties, max_future,
-- max_past, api_key_hash): store a batch of usage events exactly once. The service's call; the
-- events arrive as parallel typed arrays, element i of each array being event i.
--
-- Guarantees
--   * Exactly once per (customer, idempotency_key), enforced by the primary key of
--     meter.event_keys, not by a lookup: each event's key is inserted there, then the event (with
--     the id drawn for it) into its month's partition of meter.events, in the same statement. Two
--     racing transactions with the same key cannot both insert; the loser waits for the winner's
--     commit and reports `duplicate`. The key table is permanent: a retry of an event whose month
--     was archived is judged against the digest kept with its key (meter._event_digest).
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
-- Input: six arrays of one length, indexed from 1 (else 22023): customer external ids, meter codes, idempotency
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
-- How a batch is stored: when all its events are valid and new (the common batch), by one plain
-- INSERT in a subtransaction; only when that meets a stored key (unique_violation: a retry) or
-- an invalid element does the general path classify, insert with ON CONFLICT DO NOTHING and
-- judge. ON CONFLICT makes every row a speculative insertion (a second index descent and a second
-- WAL record per row): +50 % on an all-new batch (decision 119).
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
    v_dims     text := case when pg_catalog.cardinality(p_customers) > 0
                            then '[1:' || pg_catalog.cardinality(p_customers) || ']' end;  -- (empty: null)
    v_verdicts meter.ingest_verdict[];
    v_one      meter.ingest_verdict;
    v_id       bigint;
    v_stored   bigint;   -- events the batch fast path stored
    v_scopes   text[];
    v_allowed  bigint[];  -- the key's customers; NULL = every customer
begin
    -- Six one-dimensional arrays indexed from 1, of one length (element i is read as [i]).
    if v_n is null
       or pg_catalog.array_dims(p_customers) is distinct from v_dims
       or pg_catalog.array_dims(p_meters) is distinct from v_dims
       or pg_catalog.array_dims(p_keys) is distinct from v_dims
       or pg_catalog.array_dims(p_occurred_at) is distinct from v_dims
       or pg_catalog.array_dims(p_values) is distinct from v_dims
       or pg_catalog.array_dims(p_properties) is distinct from v_dims then
        raise exception 'meter.event_ingest_arrays: the six arrays must be given, one-dimensional from 1, and of one length'
            using errcode = '22023';
    end if;

    -- Durability is per transaction, not per session: behind a transaction-pooling proxy a
    -- session setting would not follow. Never commit an ingest with synchronous_commit = off.
    if pg_catalog.current_setting('synchronous_commit') = 'off' then
        perform pg_catalog.set_config('synchronous_commit', 'on', true);
    end if;

    -- Fast path for one event: one new, valid event from a live key, stored by one INSERT ...
    -- SELECT that also checks the key (one statement on the hottest path). Anything else
    -- (unknown key, customer or meter, out of window, key already stored) inserts nothing here
    -- and falls through to the checks and the general path below, which alone decide those
    -- verdicts: the fast paths only ever answer "accepted".
    if v_n = 1 then
        with e as materialized (
            select c.id as customer_id, m.id as meter_id, pg_catalog.nextval('meter.event_ids') as id
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
        ),
        claimed as (
            insert into meter.event_keys (customer_id, idempotency_key, event_id, occurred_at)
            select e.customer_id, p_keys[1], e.id, p_occurred_at[1] from e
            on conflict (customer_id, idempotency_key) do nothing
            returning event_id
        )
        insert into meter.events (id, customer_id, meter_id, idempotency_key, occurred_at, value, properties)
        select e.id, e.customer_id, e.meter_id, p_keys[1], p_occurred_at[1],
               coalesce(p_values[1], 1), coalesce(p_properties[1], '{}'::jsonb)
        from e join claimed k on k.event_id = e.id
        returning id into v_id;
        if v_id is not null then
            v_one := row(0, 'accepted', v_id, null, null, null)::meter.ingest_verdict;
            return next v_one;
            return;
        end if;
    end if;

    -- Fast path for a batch whose events are all valid and new (the common batch): one plain
    -- INSERT, all or nothing. An element that is not valid (unknown customer or meter, out of
    -- window, a customer the key may not act for, no live key with the ingest scope) makes it
    -- insert nothing; a key stored already, or twice in the batch, makes it fail with
    -- unique_violation (after waiting for a transaction that holds the key in flight), which
    -- undoes its subtransaction. Either way the general path below decides. A plain INSERT, not
    -- ON CONFLICT: ON CONFLICT makes every row a speculative insertion (a second index descent
    -- and a second WAL record), +50 % on an all-new batch (decision 119).
    if v_n > 1 then
        begin
            with live_key as materialized (
                select k.customer_ids from meter.api_keys k
                where k.key_hash = p_api_key_hash
                  and k.revoked_at is null
                  and 'ingest' = any (k.scopes)
            ),
            valid as materialized (
                select e.ord, c.id as customer_id, m.id as meter_id, e.idempotency_key, e.occurred_at,
                       coalesce(e.value, 1) as value, coalesce(e.properties, '{}'::jsonb) as properties
                from rows from (pg_catalog.unnest(p_customers), pg_catalog.unnest(p_meters),
                                pg_catalog.unnest(p_keys), pg_catalog.unnest(p_occurred_at),
                                pg_catalog.unnest(p_values), pg_catalog.unnest(p_properties))
                     with ordinality as e(customer, meter, idempotency_key, occurred_at, value, properties, ord)
                join meter.customers c on c.external_id = e.customer
                join meter.meters m on m.code = e.meter
                where e.occurred_at between v_now - p_max_past and v_now + p_max_future
                  and (p_api_key_hash is null
                       or exists (select 1 from live_key k
                                  where k.customer_ids is null or c.id = any (k.customer_ids)))
            ),
            -- every element valid: each gets its id (ids are drawn only then)
            new as materialized (
                select v.*, pg_catalog.nextval('meter.event_ids') as id
                from valid v
                where (select pg_catalog.count(*) from valid) = v_n
            ),
            -- the keys first, in one global lock order (see the general path); a plain INSERT
            claimed as (
                insert into meter.event_keys (customer_id, idempotency_key, event_id, occurred_at)
                select customer_id, idempotency_key, id, occurred_at from new
                order by customer_id, idempotency_key
            ),
            inserted as (
                insert into meter.events (id, customer_id, meter_id, idempotency_key, occurred_at, value, properties)
                select id, customer_id, meter_id, idempotency_key, occurred_at, value, properties
                from new
            )
            -- Both inserts run to completion (data-modifying CTEs always do) or the statement
            -- fails; so every element of `new` is stored under its id.
            select pg_catalog.array_agg(row(n.ord - 1, 'accepted', n.id, null, null, null)::meter.ingest_verdict
                                        order by n.ord),
                   pg_catalog.count(*)
              into v_verdicts, v_stored
            from new n;
            if v_stored = v_n then
                return query select * from pg_catalog.unnest(v_verdicts);
                return;
            end if;
        exception when unique_violation or check_violation then
            -- A stored or repeated key (meter.event_keys); or a repeated key whose later copy
            -- breaks a CHECK of meter.events, which the general path never inserts (it judges it
            -- against the first copy); or an event whose month has no partition (23514, a
            -- check_violation too: the general path meets it again and the call fails with it).
            -- The general path decides.
            null;
        end;
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

    -- The general path, step 1, one statement: classify every element, insert the first valid
    -- occurrence of each key (ON CONFLICT DO NOTHING: a key that exists, or that a concurrent
    -- transaction is inserting, is skipped after waiting for that transaction), and give each
    -- element its verdict when this statement can: accepted, or rejected for a reason that needs
    -- no stored row. Elements left with status NULL ("pending") need a look at the stored row:
    -- step 2.
    with input as (
        select (e.ord - 1)::integer as ord, e.customer, e.meter, e.idempotency_key,
               e.occurred_at, coalesce(e.value, 1) as value,
               coalesce(e.properties, '{}'::jsonb) as properties
        from rows from (pg_catalog.unnest(p_customers), pg_catalog.unnest(p_meters),
                        pg_catalog.unnest(p_keys), pg_catalog.unnest(p_occurred_at),
                        pg_catalog.unnest(p_values), pg_catalog.unnest(p_properties))
             with ordinality as e(customer, meter, idempotency_key, occurred_at, value, properties, ord)
    ),
    checked as (
        select i.*, c.id as customer_id, m.id as meter_id,
               case
                   when c.id is null then 'unknown_customer'
                   when v_allowed is not null and not (c.id = any (v_allowed)) then 'customer_not_allowed'
                   when m.id is null then 'unknown_meter'
                   when i.occurred_at > v_now + p_max_future then 'occurred_at_in_future'
                   when i.occurred_at < v_now - p_max_past then 'occurred_at_too_old'
               end as error
        from input i
        left join meter.customers c on c.external_id = i.customer
        left join meter.meters m on m.code = i.meter
    ),
    classified as (
        select k.*,
               -- the first valid occurrence of its key within this request: the one inserted
               k.error is null
               and pg_catalog.row_number() over (
                       partition by k.customer_id, k.idempotency_key, k.error is null
                       order by k.ord) = 1 as first_of_key
        from checked k
    ),
    -- the first valid occurrence of each key gets an id
    ids as materialized (
        select k.*, case when k.first_of_key then pg_catalog.nextval('meter.event_ids') end as id
        from classified k
    ),
    claimed as (
        insert into meter.event_keys (customer_id, idempotency_key, event_id, occurred_at)
        select customer_id, idempotency_key, id, occurred_at
        from ids
        where first_of_key
        -- One global lock order: ON CONFLICT waits on a key that another transaction holds while
        -- keeping the keys it already inserted, so two batches inserting overlapping keys in
        -- different orders could deadlock. Sorted by the unique key, they cannot.
        order by customer_id, idempotency_key
        on conflict (customer_id, idempotency_key) do nothing
        returning event_id
    ),
    inserted as (
        -- the events whose key this statement claimed
        insert into meter.events (id, customer_id, meter_id, idempotency_key, occurred_at, value, properties)
        select i.id, i.customer_id, i.meter_id, i.idempotency_key, i.occurred_at, i.value, i.properties
        from ids i join claimed c on c.event_id = i.id
        returning id
    )
    select pg_catalog.array_agg(
               row(k.ord,
                   case
                       when k.first_of_key and n.id is not null then 'accepted'
                       when k.error in ('unknown_customer', 'unknown_meter', 'customer_not_allowed') then 'rejected'
                       -- an out-of-window element may be the retry of a stored event: pending
                   end,
                   n.id, k.error,
                   case k.error
                       when 'unknown_customer' then 'customer'
                       when 'customer_not_allowed' then 'customer'
                       when 'unknown_meter' then 'meter'
                       when 'occurred_at_in_future' then 'occurred_at'
                       when 'occurred_at_too_old' then 'occurred_at'
                   end,
                   case k.error
                       when 'unknown_customer' then
                           pg_catalog.format('no customer with external id %L; create it first', k.customer)
                       when 'customer_not_allowed' then
                           pg_catalog.format('this API key may not act for customer %L', k.customer)
                       when 'unknown_meter' then
                           pg_catalog.format('no meter with code %L; create it first', k.meter)
                       when 'occurred_at_in_future' then
                           pg_catalog.format('occurred_at is more than %s ahead of the server clock',
                                             pg_catalog.justify_hours(p_max_future))
                       when 'occurred_at_too_old' then
                           pg_catalog.format('occurred_at is more than %s behind the server clock',
                                             pg_catalog.justify_hours(p_max_past))
                   end
               )::meter.ingest_verdict
               order by k.ord)
      into v_verdicts
    from ids k
    left join inserted n on n.id = k.id;

    -- Step 2, only when something is pending. A new statement takes a fresh snapshot (READ
    -- COMMITTED), so it sees every row that made step 1 skip a key, including rows a concurrent
    -- request committed while we waited. Pending elements are judged against the stored event:
    -- same content = duplicate, else conflict. An out-of-window element whose key is stored is
    -- judged the same way (a late retry is a duplicate, not an error).
    if exists (select 1 from pg_catalog.unnest(v_verdicts) v where v.status is null) then
        select pg_catalog.array_agg(
                   case
                       when v.status is not null then v
                       -- out of window and not a redelivery: nothing stored under its key before
                       -- this call, or only by a later element of it (a batch behaves as its
                       -- elements sent one by one, in order)
                       when v.code is not null and (ek.event_id is null or acc.ord > v.ord) then
                           row(v.ord, 'rejected', null, v.code, v.field, v.reason)::meter.ingest_verdict
                       when ek.event_id is null or (ev.id is null and ek.archived_digest is null) then
                           -- cannot happen (a key is stored with its event, in one transaction,
                           -- and archiving keeps a digest); fail loudly if it does
                           row(v.ord, 'rejected', null, 'internal_inconsistency', 'idempotency_key',
                               'key neither inserted nor found; retry the request')::meter.ingest_verdict
                       when ev.id is not null
                            and ev.meter_id = m.id
                            and ev.occurred_at = p_occurred_at[v.ord + 1]
                            and ev.value = coalesce(p_values[v.ord + 1], 1)
                            and ev.properties = coalesce(p_properties[v.ord + 1], '{}'::jsonb) then
                           row(v.ord, 'duplicate', ev.id, null, null, null)::meter.ingest_verdict
                       -- an archived event: its content's digest, kept with the key
                       when ev.id is null
                            and ek.archived_digest = meter._event_digest(m.id, p_occurred_at[v.ord + 1],
                                                                         coalesce(p_values[v.ord + 1], 1),
                                                                         coalesce(p_properties[v.ord + 1], '{}'::jsonb)) then
                           row(v.ord, 'duplicate', ek.event_id, null, null, null)::meter.ingest_verdict
                       else
                           row(v.ord, 'conflict', ek.event_id, 'idempotency_key_conflict', 'idempotency_key',
                               'this idempotency key was already used for an event with different content'
                              )::meter.ingest_verdict
                   end
                   order by v.ord)
          into v_verdicts
        from pg_catalog.unnest(v_verdicts) as v
        left join meter.customers c on v.status is null and c.external_id = p_customers[v.ord + 1]
        left join meter.meters m on v.status is null and m.code = p_meters[v.ord + 1]
        left join meter.event_keys ek on ek.customer_id = c.id and ek.idempotency_key = p_keys[v.ord + 1]
        -- (id, occurred_at): the event's own partition only
        left join meter.events ev on ev.id = ek.event_id and ev.occurred_at = ek.occurred_at
        left join lateral (
            select a.ord from pg_catalog.unnest(v_verdicts) as a
            where a.status = 'accepted' and a.event_id = ek.event_id
        ) as acc on true;

        -- Step 3: an audit row for every redelivery (the rollup counts duplicates from it in its
        -- ledger, finding the event by (id, occurred_at): the stored event's time, from its key,
        -- in the shard of its customer);
        -- a conflict keeps the event as offered (as judged: occurred_at in UTC, exact value).
        insert into meter.event_redeliveries (event_id, verdict, offered, occurred_at, customer_id)
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
               end,
               ek.occurred_at, ek.customer_id
        from pg_catalog.unnest(v_verdicts) as v
        left join meter.customers c on c.external_id = p_customers[v.ord + 1]
        left join meter.event_keys ek on ek.customer_id = c.id and ek.idempotency_key = p_keys[v.ord + 1]
        where v.status in ('duplicate', 'conflict');
    end if;

    return query select * from pg_catalog.unnest(v_verdicts);
end;
$$;

comment on function meter.event_ingest_arrays(text[], text[], text[], timestamptz[], numeric[], jsonb[], interval, interval, bytea) is
    'Stores usage events given as parallel arrays exactly once per (customer, idempotency_key); one verdict per element. The service''s ingest call.';

revoke all on function meter.event_ingest_arrays(text[], text[], text[], timestamptz[], numeric[], jsonb[], interval, interval, bytea) from public;
grant execute on function meter.event_ingest_arrays(text[], text[], text[], timestamptz[], numeric[], jsonb[], interval, interval, bytea) to meter_ingest;
