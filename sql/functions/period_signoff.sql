-- meter.period_signoff(period, signed_by, note, report_sha256): record that a period's
-- reconciliation was reviewed and signed (`meterctl signoff`). Returns the recorded row.
--
-- Contract
--   * The period must be YYYY-MM and have at least one invoice (22023 / 55000 otherwise): a
--     sign-off is of a closed period.
--   * signed_by names the person or role (1 to 200 characters); note is free text;
--     report_sha256 (64 lowercase hex digits, or null) identifies the report file signed.
--   * Each call adds a row (a second review adds a second sign-off; none is ever replaced); the
--     row keeps the period's invoice count and total at signing, so a later change shows.
--   * Archiving a month of events (meter.events_archive_check) requires a sign-off of every period
--     its events were billed in.
create or replace function meter.period_signoff(
    p_period        text,
    p_signed_by     text,
    p_note          text default null,
    p_report_sha256 text default null)
returns setof meter.period_signoffs
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_invoices integer;
    v_total    numeric;
begin
    if p_period is null or p_period !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' then
        raise exception 'period must be YYYY-MM, got %', coalesce(p_period, 'null') using errcode = '22023';
    end if;
    if p_signed_by is null or pg_catalog.length(pg_catalog.btrim(p_signed_by)) not between 1 and 200 then
        raise exception 'signed_by must name who signs (1 to 200 characters)' using errcode = '22023';
    end if;
    if p_report_sha256 is not null and p_report_sha256 !~ '^[0-9a-f]{64}$' then
        raise exception 'report_sha256 must be 64 lowercase hex digits, got %', p_report_sha256 using errcode = '22023';
    end if;
    select pg_catalog.count(*), coalesce(pg_catalog.sum(i.total), 0) into v_invoices, v_total
    from meter.invoices i where i.period = p_period;
    if v_invoices = 0 then
        raise exception 'period % has no invoice: close it first (meterctl close --period %)', p_period, p_period
            using errcode = '55000';
    end if;
    return query
    insert into meter.period_signoffs (period, signed_by, note, report_sha256, invoices, total_minor)
    values (p_period, pg_catalog.btrim(p_signed_by), p_note, p_report_sha256, v_invoices, v_total)
    returning *;
end;
$$;

comment on function meter.period_signoff(text, text, text, text) is
    'Records a sign-off of a closed period''s reconciliation (who, when, which report); archiving requires it.';
revoke all on function meter.period_signoff(text, text, text, text) from public;
