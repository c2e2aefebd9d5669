-- meter.customer_upsert(external_id, name, billing_timezone): creates the customer or updates its
-- name and timezone; returns its id. Idempotent, so seed files can be applied repeatedly.
-- The timezone must be one Postgres knows (pg_timezone_names); it is checked here.
-- Billing periods are calendar months in that timezone (meter.billing_period), so once a period of
-- the customer is closed (an invoice exists) the timezone never changes (55000): the months on
-- either side of a change would overlap or leave a gap (hours billed twice or never), and a closed
-- month would get a second invoice under its other bounds. Giving the same timezone again is fine.
-- A change of timezone holds the close's advisory lock while it checks, so it cannot miss the
-- invoices of a close running at the same time, and then the rollup's lock, to rebuild the
-- customer's billing period totals (meter.rollup_period_rebuild) under the new bounds.
create or replace function meter.customer_upsert(
    p_external_id      text,
    p_name             text default null,
    p_billing_timezone text default 'UTC'
)
returns bigint
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_id      bigint;
    v_changed boolean;
begin
    if not exists (select 1 from pg_catalog.pg_timezone_names where name = p_billing_timezone) then
        raise exception 'unknown billing timezone %', pg_catalog.quote_literal(p_billing_timezone)
            using errcode = '22023', hint = 'use an IANA name such as UTC or Europe/Paris';
    end if;
    -- A timezone change takes the close's lock (meter.period_close) first: a close running now
    -- finishes, and its invoices are seen below; otherwise hours could be billed by neither
    -- month or by both. Creating a customer or keeping its timezone takes no lock.
    v_changed := exists (select 1 from meter.customers c
                         where c.external_id = p_external_id and c.billing_timezone <> p_billing_timezone);
    if v_changed then
        perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('meter.close'));
    end if;
    if exists (select 1 from meter.customers c
               where c.external_id = p_external_id and c.billing_timezone <> p_billing_timezone
                 and exists (select 1 from meter.invoices i where i.customer_id = c.id)) then
        raise exception 'customer % has closed billing periods: its billing timezone cannot change', p_external_id
            using errcode = '55000',
                  hint = 'periods are calendar months in the billing timezone; a change would bill some hours twice or never';
    end if;
    insert into meter.customers (external_id, name, billing_timezone)
    values (p_external_id, p_name, p_billing_timezone)
    on conflict (external_id) do update
        set name = coalesce(excluded.name, meter.customers.name),
            billing_timezone = excluded.billing_timezone
    returning id into v_id;
    if v_changed then
        perform meter.rollup_period_rebuild(v_id);
    end if;
    return v_id;
end;
$$;

comment on function meter.customer_upsert(text, text, text) is
    'Creates or updates a customer by external_id; returns its id.';

revoke all on function meter.customer_upsert(text, text, text) from public;
