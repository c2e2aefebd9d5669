-- meter._period_of(timezone, at): the start of the billing period that holds `at` for a customer
-- billing in `timezone`: local midnight of the 1st of the month, as a timestamptz. The key of
-- meter.rollup_period(_dims); the same bounds as meter.billing_period (which also refuses
-- timezones whose months do not start on a UTC hour).
create or replace function meter._period_of(p_timezone text, p_at timestamptz)
returns timestamptz
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select pg_catalog.date_trunc('month', p_at at time zone p_timezone) at time zone p_timezone
$$;

comment on function meter._period_of(text, timestamptz) is
    'Start of the billing period (calendar month in the timezone) that holds a time: the key of rollup_period.';

revoke all on function meter._period_of(text, timestamptz) from public;
