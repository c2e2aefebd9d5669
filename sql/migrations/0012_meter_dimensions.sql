-- 0012_meter_dimensions: a meter may declare dimensions, properties its usage is grouped by
-- (issue 15: an AI API bills tokens per model, a cloud product storage per region).
--
--   meter_versions.dimensions   up to 3 property names, versioned like the rest of the
--                               definition (a new version from a future UTC hour); '{}' = none
--   rollup_hourly_dims          per (customer, meter, hour, dimension values): event count, sum,
--                               max, folded by meter.rollup_run in the same transaction as
--                               rollup_hourly (so the two always agree: Σ over the values of an
--                               hour = the hour's row), subtracted by cancellations
--
-- A dimension value is the property's text (`properties ->> name`, so 4 and "4" are one value);
-- an event without the property rolls up under JSON null for it, never dropped: the "none" value.
-- `dims` is the jsonb object {name: value-or-null} of the version in force at the hour; rows are
-- keyed by the SHA-256 of its text (values may be long: a btree key could not hold them).
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

alter table meter.meter_versions
    add column dimensions text[] not null default '{}',
    add constraint meter_versions_dimensions check (
        pg_catalog.cardinality(dimensions) <= 3 and pg_catalog.array_position(dimensions, null) is null);
comment on column meter.meter_versions.dimensions is
    'Properties usage is grouped by (at most 3; ''{}'': none): rollup_hourly_dims holds one row per value combination.';

create or replace view meter.meter_version_ranges as
select mv.meter_id, mv.version, mv.aggregation, mv.unique_property, mv.effective_from,
       coalesce(lead(mv.effective_from) over (partition by mv.meter_id order by mv.version),
                'infinity') as effective_until,
       mv.dimensions
from meter.meter_versions mv;

create table meter.rollup_hourly_dims (
    customer_id  bigint not null,
    meter_id     bigint not null,
    hour         timestamptz not null,
    dims_hash    bytea not null,
    dims         jsonb not null,
    event_count  bigint not null,
    quantity     numeric not null,
    max_value    numeric,
    updated_at   timestamptz not null default pg_catalog.now(),
    constraint rollup_hourly_dims_pkey primary key (customer_id, meter_id, hour, dims_hash),
    constraint rollup_hourly_dims_object check (pg_catalog.jsonb_typeof(dims) = 'object')
);
comment on table meter.rollup_hourly_dims is
    'Hourly rollups per dimension values of meters that declare dimensions; Σ of an hour''s rows = its rollup_hourly row.';
comment on column meter.rollup_hourly_dims.dims is
    '{dimension: value}: the property''s text, or null when the event did not have it.';
comment on column meter.rollup_hourly_dims.dims_hash is 'SHA-256 of dims::text: the key (values may be long).';

grant select on meter.rollup_hourly_dims to meter_analyst;

-- meter_upsert gains the dimensions (sql/functions/meter_upsert.sql), rollup_verify a column
-- (sql/functions/rollup_verify.sql): the old signatures would stay behind.
drop function if exists meter.meter_upsert(text, text, text, text, text, timestamptz);
drop function if exists meter.rollup_verify(timestamptz, timestamptz);
-- meter.usage gains group_by and filter, and a dimensions column (sql/functions/usage.sql).
drop function if exists meter.usage(text, text, timestamptz, timestamptz, text);
