-- 0004_month_close: currencies, plans and their prices, customers' subscriptions to plans, and the
-- invoices a month close freezes (with their lines).
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.
-- The logic is in sql/functions/: billing_period, price_amount, _period_usage, close_period,
-- plan_upsert, plan_price_set, customer_subscribe, and the views reconciliation and
-- late_after_close.

-- ISO 4217 currencies with their minor unit (the number of decimals of the major unit). Amounts are
-- stored everywhere as integers of the minor unit (cents for usd, yen for jpy, fils for kwd).
create table meter.currencies (
    code        text primary key,
    minor_unit  smallint not null,
    constraint currencies_code check (code ~ '^[a-z]{3}$'),
    constraint currencies_minor_unit check (minor_unit between 0 and 4)
);
comment on table meter.currencies is 'ISO 4217 currencies (lower case) and their minor unit.';
insert into meter.currencies (code, minor_unit) values
    ('usd', 2), ('eur', 2), ('gbp', 2), ('chf', 2), ('cad', 2), ('aud', 2), ('nzd', 2), ('sek', 2),
    ('nok', 2), ('dkk', 2), ('pln', 2), ('czk', 2), ('brl', 2), ('mxn', 2), ('inr', 2), ('cny', 2),
    ('sgd', 2), ('hkd', 2), ('zar', 2), ('jpy', 0), ('krw', 0), ('clp', 0), ('isk', 0), ('vnd', 0),
    ('kwd', 3), ('bhd', 3), ('jod', 3), ('omr', 3), ('tnd', 3);

-- A plan: a currency and one price per meter.
create table meter.plans (
    id          bigint generated always as identity primary key,
    code        text not null unique,
    name        text,
    currency    text not null references meter.currencies (code),
    created_at  timestamptz not null default now(),
    constraint plans_code check (code ~ '^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$')
);
comment on table meter.plans is 'Plans: a currency and a price per meter (meter.plan_prices).';

-- How a meter's period quantity becomes an amount (meter.price_amount):
--   per_unit   quantity × unit_amount
--   package    ceil(quantity / package_size) × unit_amount (blocks of N, rounded up)
--   graduated  each tier's units at that tier's unit_amount, plus the flat_amount of every tier reached
--   volume     every unit at the unit_amount of the tier the total falls in, plus that tier's flat_amount
-- unit_amount and flat_amount are in minor units of the plan's currency and may be fractional
-- (0.05 = a twentieth of a cent per unit); the amount is rounded once per line (price_amount).
create table meter.plan_prices (
    plan_id          bigint not null references meter.plans (id),
    meter_id         bigint not null references meter.meters (id),
    model            text not null,
    unit_amount      numeric,
    package_size     numeric,
    tiers            jsonb,
    engine_price_id  text,
    created_at       timestamptz not null default now(),
    constraint plan_prices_pkey primary key (plan_id, meter_id),
    constraint plan_prices_model check (model in ('per_unit', 'package', 'graduated', 'volume')),
    constraint plan_prices_shape check (
        case model
            when 'per_unit' then unit_amount is not null and tiers is null and package_size is null
            when 'package' then unit_amount is not null and package_size > 0 and tiers is null
            else tiers is not null and jsonb_typeof(tiers) = 'array' and unit_amount is null and package_size is null
        end),
    constraint plan_prices_unit_amount check (unit_amount >= 0)
);
comment on table meter.plan_prices is
    'The price of each meter in a plan (model, amounts in minor units); mirrored to the engine as engine_price_id.';

-- Which plan a customer is on, from a period on (changes take effect at a period start).
create table meter.customer_plans (
    customer_id     bigint not null references meter.customers (id),
    effective_from  text not null,
    plan_id         bigint not null references meter.plans (id),
    created_at      timestamptz not null default now(),
    constraint customer_plans_pkey primary key (customer_id, effective_from),
    constraint customer_plans_period check (effective_from ~ '^[0-9]{4}-(0[1-9]|1[0-2])$')
);
comment on table meter.customer_plans is 'Subscriptions: the plan in force from a billing period (YYYY-MM) on.';

-- Invoices frozen by meter.close_period: one per customer and period, never changed afterwards.
-- A period is closed exactly when its invoice exists.
create table meter.invoices (
    id            bigint generated always as identity primary key,
    customer_id   bigint not null references meter.customers (id),
    period        text not null,
    period_start  timestamptz not null,
    period_end    timestamptz not null,
    plan_id       bigint not null references meter.plans (id),
    currency      text not null references meter.currencies (code),
    subtotal      bigint not null default 0,
    total         bigint not null default 0,
    closed_at     timestamptz not null default now(),
    constraint invoices_customer_period_key unique (customer_id, period_start),
    constraint invoices_period check (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$')
);
comment on table meter.invoices is
    'Our invoices, one per customer and period, frozen at close (amounts in minor units of currency).';

-- Lines: 'usage' for the period's meters; 'adjustment' for a change to an earlier closed period
-- (late events or cancellations after its close), landing on the next invoice.
create table meter.invoice_lines (
    invoice_id      bigint not null references meter.invoices (id),
    line_no         integer not null,
    kind            text not null,
    meter_id        bigint not null references meter.meters (id),
    adjusts_period  text,
    event_count     bigint not null,
    quantity        numeric not null,
    amount          bigint not null,
    events_hash     text,
    description     text not null,
    constraint invoice_lines_pkey primary key (invoice_id, line_no),
    constraint invoice_lines_kind check (kind in ('usage', 'adjustment')),
    constraint invoice_lines_adjusts check ((kind = 'adjustment') = (adjusts_period is not null))
);
comment on table meter.invoice_lines is
    'Invoice lines: event count, quantity, amount and a SHA-256 of the events that make each usage line.';
comment on column meter.invoice_lines.events_hash is
    'hex SHA-256 over the line''s events, sorted by idempotency key, one "key<TAB>value" line each, joined by newlines (docs/runbook.md shows the psql query that recomputes it).';
create index invoice_lines_adjusts on meter.invoice_lines (adjusts_period) where kind = 'adjustment';

grant select on meter.currencies, meter.plans, meter.plan_prices, meter.customer_plans,
                meter.invoices, meter.invoice_lines
    to meter_analyst;
