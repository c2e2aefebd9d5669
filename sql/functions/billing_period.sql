-- meter.billing_period(customer_id, period): the UTC bounds of a customer's billing period.
--
-- A period is a calendar month ('YYYY-MM') in the customer's billing timezone: from local midnight
-- of the 1st to local midnight of the next 1st. DST is handled by the timezone database (a
-- Europe/Paris October has 745 hours, its March 743).
--
-- Rollups are hourly in UTC, so a month edge must fall on a UTC hour. A timezone whose offset is
-- not a whole number of hours at that edge (Asia/Kolkata +05:30, Asia/Kathmandu +05:45, ...) is
-- refused with a clear error (22023) rather than splitting an hour silently between two invoices.
create or replace function meter.billing_period(p_customer_id bigint, p_period text)
returns table (period_start timestamptz, period_end timestamptz)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_tz    text;
    v_local timestamp;
begin
    if p_period is null or p_period !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' then
        raise exception 'period must be YYYY-MM, got %', coalesce(p_period, 'null') using errcode = '22023';
    end if;
    select billing_timezone into v_tz from meter.customers where id = p_customer_id;
    if not found then
        raise exception 'unknown customer id %', p_customer_id using errcode = '22023';
    end if;
    v_local := (p_period || '-01')::timestamp;
    period_start := v_local at time zone v_tz;
    period_end := (v_local + interval '1 month') at time zone v_tz;
    if pg_catalog.date_trunc('hour', period_start, 'UTC') <> period_start
       or pg_catalog.date_trunc('hour', period_end, 'UTC') <> period_end then
        raise exception 'the billing timezone % of customer % does not start months on a UTC hour (period %: %)',
            v_tz, p_customer_id, p_period, period_start
            using errcode = '22023',
                  hint = 'hourly rollups cannot be split between two periods: bill this customer in a timezone with a whole-hour offset (e.g. UTC)';
    end if;
    return next;
end;
$$;

comment on function meter.billing_period(bigint, text) is
    'UTC bounds of a customer''s calendar-month period in its billing timezone; refuses non-hour month edges.';

revoke all on function meter.billing_period(bigint, text) from public;
