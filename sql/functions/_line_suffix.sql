-- meter._line_suffix(filter): what a priced filter adds to the engine names of its line: the
-- Billing Meter's event name (the meter's plus this) and each meter event's identifier (the
-- outbox key plus this). '' for '{}' (a meter priced whole, or its default price, keeps the
-- meter's own engine meter); otherwise '.f' and the first 12 hex digits of the SHA-256 of the
-- filter's stored text (filters are normalised by meter.plan_price_set, so one filter has one
-- suffix). Short enough for Stripe's 100-character event names; the engine meter's display name
-- carries the readable filter (meter._filter_label).
create or replace function meter._line_suffix(p_filter jsonb)
returns text
language sql
immutable
parallel safe
set search_path = pg_catalog, pg_temp
as $$
    select case when p_filter = '{}'::jsonb then ''
                else '.f' || pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(p_filter::text, 'UTF8')), 'hex'), 12)
           end
$$;

comment on function meter._line_suffix(jsonb) is
    'The engine-name suffix of a priced filter: '''' for ''{}'', else ''.f'' + 12 hex digits of its SHA-256.';
revoke all on function meter._line_suffix(jsonb) from public;
