-- meter.event_ingest(events, max_future, max_past, api_key_hash): store a batch of usage events,
-- given as one JSON array, exactly once.
--
-- The same call as meter.event_ingest_arrays() (whose header states the guarantees, the verdicts
-- and the key check), for callers that hold a JSON array: psql, scripts, the tests. The service
-- calls meter.event_ingest_arrays() directly with the fields it has already checked.
--
-- Input: a JSON array of objects with the members customer, meter, idempotency_key, occurred_at
-- (timestamptz text), value (numeric text or number; absent = 1), properties (object; absent =
-- {}). Other members are ignored. Not an array: 22023. A member that is not of its type (a
-- malformed timestamp or number) fails the call, as a cast would (22007, 22P02): nothing stored.
--
-- Runs as its caller: the work and the privileges are meter.event_ingest_arrays()'s (SECURITY
-- DEFINER); meter_ingest may execute both.
create or replace function meter.event_ingest(
    p_events     jsonb,
    p_max_future interval default interval '5 minutes',
    p_max_past   interval default interval '35 days',
    p_api_key_hash bytea default null
)
returns setof meter.ingest_verdict
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_customers   text[];
    v_meters      text[];
    v_keys        text[];
    v_occurred_at timestamptz[];
    v_values      numeric[];
    v_properties  jsonb[];
begin
    if p_events is null or pg_catalog.jsonb_typeof(p_events) <> 'array' then
        raise exception 'meter.event_ingest: p_events must be a JSON array'
            using errcode = '22023';
    end if;

    select coalesce(pg_catalog.array_agg(e.customer order by e.ord), '{}'),
           coalesce(pg_catalog.array_agg(e.meter order by e.ord), '{}'),
           coalesce(pg_catalog.array_agg(e.idempotency_key order by e.ord), '{}'),
           coalesce(pg_catalog.array_agg(e.occurred_at order by e.ord), '{}'),
           coalesce(pg_catalog.array_agg(e.value order by e.ord), '{}'),
           coalesce(pg_catalog.array_agg(e.properties order by e.ord), '{}')
      into v_customers, v_meters, v_keys, v_occurred_at, v_values, v_properties
    from rows from (pg_catalog.jsonb_to_recordset(p_events)
                    as (customer text, meter text, idempotency_key text, occurred_at timestamptz,
                        value numeric, properties jsonb))
         with ordinality as e(customer, meter, idempotency_key, occurred_at, value, properties, ord);

    return query
    select * from meter.event_ingest_arrays(v_customers, v_meters, v_keys, v_occurred_at,
                                            v_values, v_properties,
                                            p_max_future, p_max_past, p_api_key_hash);
end;
$$;

comment on function meter.event_ingest(jsonb, interval, interval, bytea) is
    'Stores usage events given as a JSON array exactly once per (customer, idempotency_key); one verdict per input element. The JSON form of event_ingest_arrays.';

revoke all on function meter.event_ingest(jsonb, interval, interval, bytea) from public;
grant execute on function meter.event_ingest(jsonb, interval, interval, bytea) to meter_ingest;
