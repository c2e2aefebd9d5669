-- What the pgTAP files share, included once per file with `\ir support/fixtures.sql` (pg_prove
-- runs each file through psql). Temporary objects only (pg_temp): nothing outlives the file's
-- session, and nothing here is a test. The folder is not matched by Tests/sql/*.sql.

-- pg_temp.put(customer, meter, key, occurred_at, value, properties, xid, received_at): one raw
-- event stored directly (not through meter.event_ingest), by the customer's external id and the
-- meter's code, with its key in meter.event_keys as ingest stores it; returns its id.
--   xid defaults to 100: a long-finished transaction, below any rollup horizon, as committed
--   history leaves an event (rollup_run.test.sql explains why a test cannot commit its own);
--   value, properties and received_at default as the table does (1, '{}', now()).
--   The event's month needs its partition: scripts/test.sh creates 2024-01 to 2027-12.
create function pg_temp.put(p_customer text, p_meter text, p_key text, p_occurred_at timestamptz,
                            p_value numeric default 1, p_properties jsonb default '{}', p_xid xid8 default '100',
                            p_received_at timestamptz default pg_catalog.now())
returns bigint
language sql
as $$
    with e as materialized (
        select c.id as customer_id, m.id as meter_id, pg_catalog.nextval('meter.event_ids') as id
        from meter.customers c, meter.meters m
        where c.external_id = p_customer and m.code = p_meter
    ),
    k as (
        insert into meter.event_keys (customer_id, idempotency_key, event_id, occurred_at)
        select e.customer_id, p_key, e.id, p_occurred_at from e
    )
    insert into meter.events (id, customer_id, meter_id, idempotency_key, occurred_at, value, properties, xid, received_at)
    select e.id, e.customer_id, e.meter_id, p_key, p_occurred_at, p_value, p_properties, p_xid, p_received_at
    from e
    returning id
$$;

-- pg_temp.key_hash(token): what the service sends for a bearer token (its SHA-256), and
-- pg_temp.key_create(name, token): meter.api_key_create as `meterctl keys create` calls it
-- (hash and 12-character prefix; the token itself never reaches Postgres).
create function pg_temp.key_hash(p_token text) returns bytea language sql immutable
as $$ select pg_catalog.sha256(pg_catalog.convert_to(p_token, 'UTF8')) $$;
create function pg_temp.key_create(p_name text, p_token text) returns bigint language sql
as $$ select meter.api_key_create(p_name, pg_catalog.left(p_token, 12), pg_temp.key_hash(p_token)) $$;

-- For the files that race two real sessions (dblink): a conninfo back to this very database
-- over its own socket, and pg_temp.waits(pid): true once session `pid` waits on a lock (5 s at
-- most).
create function pg_temp.conninfo() returns text language sql
as $$ select pg_catalog.format('host=%s port=%s dbname=%s user=%s',
                               pg_catalog.split_part(pg_catalog.current_setting('unix_socket_directories'), ',', 1),
                               pg_catalog.current_setting('port'), pg_catalog.current_database(), current_user) $$;
create function pg_temp.waits(p_pid int) returns boolean language plpgsql
as $$
begin
    for i in 1..500 loop
        if exists (select 1 from pg_catalog.pg_stat_activity where pid = p_pid and wait_event_type = 'Lock') then
            return true;
        end if;
        perform pg_catalog.pg_sleep(0.01);
    end loop;
    return false;
end $$;
