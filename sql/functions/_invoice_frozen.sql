-- meter._invoice_frozen(): trigger function keeping closed invoices final. A correction to a closed
-- period (a late event, a cancellation) lands as an adjustment line on a later invoice
-- (meter.period_close); the invoice itself is never updated, deleted, truncated or given a new
-- line once its close committed.
create or replace function meter._invoice_frozen()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
declare
    v_closed bigint;
begin
    -- A line added to an invoice whose close committed earlier is refused too; lines written by
    -- the close itself (same transaction: closed_at = now()) pass. Checked once per INSERT
    -- statement over the lines it added (invoice_lines_added), not once per line: a close adds
    -- tens of thousands of lines in one statement.
    if tg_op = 'INSERT' then
        select l.invoice_id into v_closed
        from added l join meter.invoices i on i.id = l.invoice_id
        where i.closed_at < pg_catalog.now()
        limit 1;
        if found then
            raise exception 'invoice % is closed: no line is added to it', v_closed
                using errcode = '42501',
                      hint = 'corrections land as adjustment lines on the next invoice (meterctl close of the next period)';
        end if;
        return null;
    end if;
    raise exception '% rows are final once their period is closed', tg_table_name
        using errcode = '42501',
              hint = 'corrections land as adjustment lines on the next invoice (meterctl close of the next period)';
end;
$$;

comment on function meter._invoice_frozen() is 'Trigger: closed invoices and their lines are never changed.';
revoke all on function meter._invoice_frozen() from public;

-- Invoice totals are written by period_close in the same transaction as the invoice (the row is
-- inserted, then its total set before commit): only changes in later transactions are refused.
create or replace trigger invoices_frozen
    before update or delete on meter.invoices
    for each row when (old.closed_at < pg_catalog.now()) execute function meter._invoice_frozen();

create or replace trigger invoice_lines_frozen
    before update or delete on meter.invoice_lines
    for each row execute function meter._invoice_frozen();

create or replace trigger invoice_lines_added
    after insert on meter.invoice_lines
    referencing new table as added
    for each statement execute function meter._invoice_frozen();

create or replace trigger invoices_no_truncate
    before truncate on meter.invoices
    for each statement execute function meter._invoice_frozen();

create or replace trigger invoice_lines_no_truncate
    before truncate on meter.invoice_lines
    for each statement execute function meter._invoice_frozen();
