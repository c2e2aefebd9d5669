-- 0024_rollup_ledger_period: the rollup's ledger also kept per billing period, so that the
-- reconciliation reads one row per line and dimension values instead of the line's ~720 hours
-- (issue 21; decision 124).
--
--   rollup_ledger_period  (customer, meter, billing period, dimension values) -> Σ of its
--                         rollup_ledger hours: events, cancelled, duplicates, late, value in and
--                         out, key checksum
--
-- Kept by meter.rollup_run from the same rows as the hours, by the same statements' CTEs, in the
-- same transaction (as rollup_period is kept beside rollup_hourly, decision 116); so a period row
-- is always Σ of its hours (meter.rollup_ledger_period_verify lists any that is not, and
-- meter.rollup_period_rebuild recomputes them, as after a change of billing timezone). The period
-- is the customer's calendar month in its billing timezone (meter._period_of), the key of
-- rollup_period.
--
-- Backfilled here, under the rollup's advisory lock, from rollup_ledger (built-ins only: the
-- functions are applied after the migrations).
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

-- The rollup's lock first, before any table lock (as in 0023).
select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.rollup'));

-- Until the functions are re-applied (right after the migrations, in another transaction), the
-- rollup_run before this migration would fold without writing the period rows, which would then
-- be short of those folds for good: it refuses instead, until `meterctl migrate` finishes.
create or replace function meter.rollup_run(p_max_events integer default 1000000)
returns meter.rollup_result
language plpgsql
set search_path = pg_catalog, pg_temp
as $stub$
begin
    raise exception 'migration 0024 is applied but not yet the functions that go with it'
        using errcode = '55000', hint = 'let meterctl migrate finish (it re-applies sql/functions)';
end;
$stub$;

create table meter.rollup_ledger_period (
    customer_id  bigint not null,
    meter_id     bigint not null,
    period_start timestamptz not null,
    dims_hash    bytea not null,
    dims         jsonb not null,
    events       bigint not null default 0,
    cancelled    bigint not null default 0,
    duplicates   bigint not null default 0,
    late         bigint not null default 0,
    value_in     numeric not null default 0,
    value_out    numeric not null default 0,
    key_checksum numeric not null default 0,
    updated_at   timestamptz not null default pg_catalog.now(),
    constraint rollup_ledger_period_pkey primary key (customer_id, meter_id, period_start, dims_hash),
    constraint rollup_ledger_period_dims_object check (pg_catalog.jsonb_typeof(dims) = 'object'),
    constraint rollup_ledger_period_counts check (events >= 0 and cancelled >= 0 and duplicates >= 0 and late >= 0)
);
comment on table meter.rollup_ledger_period is
    'Per customer, meter, billing period and dimension values: Σ of its meter.rollup_ledger hours (events, cancellations, duplicates, late, values, key checksum).';
comment on column meter.rollup_ledger_period.period_start is
    'Start of the customer''s billing period (calendar month in its billing timezone, meter._period_of), as in rollup_period.';
comment on column meter.rollup_ledger_period.dims_hash is 'SHA-256 of dims::text, as in rollup_ledger.';

grant select on meter.rollup_ledger_period to meter_analyst;

insert into meter.rollup_ledger_period
       (customer_id, meter_id, period_start, dims_hash, dims, events, cancelled, duplicates, late,
        value_in, value_out, key_checksum)
select l.customer_id, l.meter_id,
       pg_catalog.date_trunc('month', l.hour at time zone c.billing_timezone) at time zone c.billing_timezone,
       l.dims_hash, pg_catalog.min(l.dims::text)::jsonb,
       pg_catalog.sum(l.events), pg_catalog.sum(l.cancelled), pg_catalog.sum(l.duplicates), pg_catalog.sum(l.late),
       pg_catalog.sum(l.value_in), pg_catalog.sum(l.value_out), pg_catalog.sum(l.key_checksum)
from meter.rollup_ledger l
join meter.customers c on c.id = l.customer_id
group by 1, 2, 3, 4;
