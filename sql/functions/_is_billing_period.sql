-- meter._is_billing_period(timezone, from, to): is [from, to) exactly one billing period of a
-- customer billing in `timezone` (a calendar month there, meter._period_of's)? Then the rows the
-- rollup keeps per period (rollup_period, rollup_period_dims, rollup_ledger_period, keyed by
-- `from`) hold its figures (decision 124); any other range is read from its hours.
-- A simple SQL expression: inlined where it is called, not a call per row.
create or replace function meter._is_billing_period(p_timezone text, p_from timestamptz, p_to timestamptz)
returns boolean
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.date_trunc('month', p_from at time zone p_timezone) at time zone p_timezone = p_from
       and ((p_from at time zone p_timezone) + interval '1 month') at time zone p_timezone = p_to
$$;

comment on function meter._is_billing_period(text, timestamptz, timestamptz) is
    'Whether [from, to) is exactly one billing period (calendar month in the timezone): the key of the rollup''s period rows.';

revoke all on function meter._is_billing_period(text, timestamptz, timestamptz) from public;
