-- meter.events_partition_runway: how far ahead meter.events can take events. One row. For
-- operators in psql and the meter_events_partition_runway_seconds gauge of serve.
--
--   covered_until      the end of the last month, counting from the current one, that has its
--                      partition with no month missing in between: an event at or after it
--                      would fail to insert (no default partition, on purpose)
--   runway_seconds     covered_until - now(), in seconds (0 when the current month has none)
--   partitions         partitions of meter.events now attached
--   oldest_month       the first instant of the oldest attached month (older ones archived)
--   archived_months    months exported and dropped (meter.event_archives)
create or replace view meter.events_partition_runway as
with parts as (
    select pg_catalog.substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid), $re$FROM \('([^']+)'\)$re$)::timestamptz as range_from,
           pg_catalog.substring(pg_catalog.pg_get_expr(c.relpartbound, c.oid), $re$TO \('([^']+)'\)$re$)::timestamptz as range_to
    from pg_catalog.pg_inherits i
    join pg_catalog.pg_class c on c.oid = i.inhrelid
    where i.inhparent = 'meter.events'::regclass
),
covered as (
    -- walk from the month holding now() to the end of the contiguous run of partitions
    with recursive run(range_to) as (
        select p.range_to from parts p where p.range_from <= pg_catalog.now() and p.range_to > pg_catalog.now()
        union all
        select p.range_to from run r join parts p on p.range_from = r.range_to
    )
    select pg_catalog.max(range_to) as covered_until from run
)
select c.covered_until,
       greatest(coalesce(extract(epoch from c.covered_until - pg_catalog.now()), 0), 0)::bigint as runway_seconds,
       (select pg_catalog.count(*) from parts) as partitions,
       (select pg_catalog.min(range_from) from parts) as oldest_month,
       (select pg_catalog.count(*) from meter.event_archives) as archived_months
from covered c;

comment on view meter.events_partition_runway is
    'How far ahead meter.events has monthly partitions (covered_until, runway_seconds), how many, the oldest, and archived months.';
grant select on meter.events_partition_runway to meter_analyst;
