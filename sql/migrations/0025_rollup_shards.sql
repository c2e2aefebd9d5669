-- 0025_rollup_shards: the rollup split into shards by customer, each with its own watermark and
-- lock, so that several runs fold at once, one per core (issue 21; decision 125).
--
--   rollup_watermark   one row per shard (shard 0 .. shard_count - 1; the row of shard 0 keeps
--                      the name 'events'); a customer's events, cancellations and redeliveries
--                      belong to shard customer_id % shard_count
--   event_redeliveries + customer_id (the event's customer: its shard), backfilled from the
--                      events' keys
--
-- One shard (shard_count 1), as every database has after this migration, is exactly the rollup
-- before it. meter.rollup_shards_set(n) changes the count (after folding every shard to one
-- common position). meter.rollup_run(max_events, shard) folds one shard; without a shard, every
-- shard in turn.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

-- The rollup's lock first, before any table lock (as in 0023).
select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));

-- The signature changes (a shard argument): the former function goes, and until the functions are
-- re-applied (right after the migrations) a stub refuses, as in 0023.
drop function meter.rollup_run(integer);
create function meter.rollup_run(p_max_events integer default 1000000, p_shard integer default null)
returns meter.rollup_result
language plpgsql
set search_path = pg_catalog, pg_temp
as $stub$
begin
    raise exception 'migration 0025 is applied but not yet the functions that go with it'
        using errcode = '55000', hint = 'let meterctl migrate finish (it re-applies sql/functions)';
end;
$stub$;
revoke all on function meter.rollup_run(integer, integer) from public;

alter table meter.rollup_watermark drop constraint rollup_watermark_single_row;
alter table meter.rollup_watermark
    add column shard       integer not null default 0,
    add column shard_count integer not null default 1;
alter table meter.rollup_watermark
    add constraint rollup_watermark_shard_key unique (shard),
    add constraint rollup_watermark_shard_range check (shard >= 0 and shard < shard_count),
    add constraint rollup_watermark_shard_name check ((shard = 0) = (name = 'events'));
comment on table meter.rollup_watermark is
    'One row per rollup shard: the events of its customers (customer_id % shard_count = shard) with (xid, id) below (position_xid, position_id) are folded into the rollups; only rollup_run moves it.';
comment on column meter.rollup_watermark.shard is
    'The shard: customers with customer_id % shard_count = shard. Shard 0''s row is named events.';
comment on column meter.rollup_watermark.shard_count is
    'How many shards there are (the same on every row; meter.rollup_shards_set changes it).';

-- (every stored event has its key in meter.event_keys, archived ones included: archiving keeps
-- the keys, decision 122; so every row finds its customer)
alter table meter.event_redeliveries add column customer_id bigint;
update meter.event_redeliveries r set customer_id = k.customer_id
from meter.event_keys k
where k.event_id = r.event_id;
alter table meter.event_redeliveries alter column customer_id set not null;
comment on column meter.event_redeliveries.customer_id is 'The event''s customer: its rollup shard.';

-- An ingest still on the former functions (until `meterctl migrate` re-applies them, moments
-- later) inserts redeliveries without the customer: a trigger fills it in, so that ingest does not
-- fail on NOT NULL meanwhile (sql/functions/_redelivery_customer.sql keeps the function; this is
-- its first version, written here because the functions are applied after the migrations).
create or replace function meter._redelivery_customer()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $fn$
begin
    select e.customer_id into new.customer_id
    from meter.events e
    where e.id = new.event_id and (new.occurred_at is null or e.occurred_at = new.occurred_at);
    if new.customer_id is null then
        select k.customer_id into new.customer_id from meter.event_keys k where k.event_id = new.event_id;
    end if;
    return new;
end;
$fn$;
create trigger event_redeliveries_customer
    before insert on meter.event_redeliveries
    for each row when (new.customer_id is null)
    execute function meter._redelivery_customer();
