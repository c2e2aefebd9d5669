-- 0018_alerts: threshold alerts (issue 16: "tell me when a customer reaches 80 % of its plan or
-- 1,000 EUR this month"), and the firings that make each fire once per period.
--
--   alerts          per customer or per plan (every customer on it): a meter's quantity
--                   (kind quantity: the period's whole-meter quantity reaches `threshold`), the
--                   period's amount (kind amount: the usage lines' total, in minor units), or a
--                   share of the plan's limit on the meter (kind limit_share: quantity reaches
--                   threshold x the whole-meter limit, e.g. 0.8)
--   alert_firings   (alert, customer, period): written when the alert fires, so it fires at most
--                   once per customer and period (decision 115)
--   limit_firings   (customer, plan, meter, filter, period): limit.reached, once likewise
--
-- Evaluated by meter._alerts_evaluate inside meter.rollup_run's transaction, for the customers and
-- periods whose hours that run changed; the message (meter._webhook_emit) commits with it.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

create table meter.alerts (
    id           bigint generated always as identity primary key,
    customer_id  bigint references meter.customers (id),
    plan_id      bigint references meter.plans (id),
    meter_id     bigint references meter.meters (id),
    kind         text not null,
    threshold    numeric not null,
    created_at   timestamptz not null default pg_catalog.now(),
    constraint alerts_scope check ((customer_id is null) <> (plan_id is null)),
    constraint alerts_kind check (kind in ('quantity', 'amount', 'limit_share')),
    constraint alerts_meter check ((kind = 'amount') = (meter_id is null)),
    constraint alerts_threshold check (threshold > 0 and threshold < 'Infinity')
);
comment on table meter.alerts is
    'Threshold alerts per customer or plan: a meter''s period quantity, the period''s amount, or a share of a limit.';

create table meter.alert_firings (
    alert_id     bigint not null references meter.alerts (id),
    customer_id  bigint not null references meter.customers (id),
    period       text not null,
    value        numeric not null,
    fired_at     timestamptz not null default pg_catalog.now(),
    message_id   text,
    constraint alert_firings_pkey primary key (alert_id, customer_id, period)
);
comment on table meter.alert_firings is 'Each alert fires at most once per customer and period (decision 115).';

create table meter.limit_firings (
    customer_id  bigint not null references meter.customers (id),
    plan_id      bigint not null references meter.plans (id),
    meter_id     bigint not null references meter.meters (id),
    filter       jsonb not null,
    period       text not null,
    value        numeric not null,
    fired_at     timestamptz not null default pg_catalog.now(),
    constraint limit_firings_pkey primary key (customer_id, plan_id, meter_id, filter, period)
);
comment on table meter.limit_firings is 'limit.reached, at most once per customer, limit and period.';

grant select on meter.alerts, meter.alert_firings, meter.limit_firings to meter_analyst;
