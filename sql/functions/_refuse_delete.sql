-- meter._refuse_delete(): trigger function that refuses DELETE on the rows events point at.
--
-- meter.events has no foreign keys (see 0001_init.sql: they would serialize concurrent ingest on
-- the parent rows), so referential integrity rests on parents never disappearing. Customers and
-- meters are retired, never deleted: history must stay explainable.
create or replace function meter._refuse_delete()
returns trigger
language plpgsql
set search_path = pg_catalog, pg_temp
as $$
begin
    raise exception '% rows are never deleted (events refer to them)', tg_table_name
        using errcode = '42501',
              hint = 'keep the row; billing history must stay explainable';
end;
$$;

comment on function meter._refuse_delete() is
    'Trigger: customers and meters are never deleted (events refer to them without foreign keys).';

revoke all on function meter._refuse_delete() from public;

create or replace trigger customers_refuse_delete
    before delete on meter.customers
    for each row execute function meter._refuse_delete();

create or replace trigger meters_refuse_delete
    before delete on meter.meters
    for each row execute function meter._refuse_delete();

-- TRUNCATE bypasses row triggers; refuse it too.
create or replace trigger customers_refuse_truncate
    before truncate on meter.customers
    for each statement execute function meter._refuse_delete();

create or replace trigger meters_refuse_truncate
    before truncate on meter.meters
    for each statement execute function meter._refuse_delete();
