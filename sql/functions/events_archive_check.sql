-- meter.events_archive_check(month, late_window): may the UTC month's partition of meter.events
-- be archived now? Raises with the first reason it may not (SQLSTATE 55000, object not in
-- prerequisite state; 22023 for a malformed month); otherwise returns one row: the partition,
-- its bounds, its events, the billing periods they were billed in and the events nobody bills.
--
-- A month may be archived when
--   * its partition meter.events_YYYY_MM is attached (not archived already, not never created);
--   * its late window has passed: now() >= the month's end + late_window (default 35 days and
--     5 minutes: serve's default past tolerance and clock allowance; pass the largest
--     --past-tolerance-seconds any serve uses). After it no event of the month can arrive;
--   * every (customer, billing period) its events fall in is past its own late window too
--     (period end + late_window: local months end up to 14 hours after the UTC month) and closed
--     (an invoice exists), except for a customer without a plan for that period (nothing bills
--     those events: they are counted in unbilled_events);
--   * every change of those events after their close (a late event, a cancellation) is invoiced
--     already, as an adjustment on a later close of the customer: an adjustment made after the
--     archive would hash events that are gone;
--   * every billing period among those has a sign-off made after the period's last close
--     (meter.period_signoff);
--   * every event of the month is rolled up (below its customer's shard's watermark) and so is
--     every cancellation of one and every duplicate of one (counted in the rollup's ledger), so
--     rollups, the ledger and invoices no longer need the rows.
-- A customer's billing period is a calendar month in its timezone, so one UTC month's events are
-- billed in up to two periods per customer (e.g. 2026-10 and 2026-11 east of UTC).
create or replace function meter.events_archive_check(
    p_month       text,
    p_late_window interval default interval '35 days 5 minutes')
returns table (partition_name text, range_from timestamptz, range_to timestamptz, events bigint,
               periods text[], unbilled_events bigint)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
declare
    v_part    regclass;
    v_problem text;
begin
    if p_month is null or p_month !~ '^[0-9]{4}-(0[1-9]|1[0-2])$' then
        raise exception 'month must be YYYY-MM, got %', coalesce(p_month, 'null') using errcode = '22023';
    end if;
    if p_late_window is null or p_late_window < interval '0' then
        raise exception 'late_window must be a non-negative interval' using errcode = '22023';
    end if;
    range_from := (p_month || '-01 00:00:00+00')::timestamptz;
    range_to := range_from + interval '1 month';
    partition_name := 'events_' || pg_catalog.replace(p_month, '-', '_');

    if exists (select 1 from meter.event_archives a where a.period_start = range_from) then
        raise exception 'month % is archived already (meter.event_archives)', p_month using errcode = '55000';
    end if;
    select c.oid::regclass into v_part
    from pg_catalog.pg_inherits i join pg_catalog.pg_class c on c.oid = i.inhrelid
    join pg_catalog.pg_namespace n on n.oid = c.relnamespace
    where i.inhparent = 'meter.events'::regclass and n.nspname = 'meter' and c.relname = partition_name;
    if v_part is null then
        raise exception 'meter.events has no partition % for month %', partition_name, p_month using errcode = '55000';
    end if;
    if pg_catalog.now() < range_to + p_late_window then
        raise exception 'the late window of month % is open until % (late events may still arrive)',
            p_month, range_to + p_late_window using errcode = '55000';
    end if;

    -- (per rollup shard: its customers' events past its watermark)
    if exists (select 1 from meter.rollup_watermark w
               cross join lateral (select 1 from meter.events e
                                   where e.occurred_at >= range_from and e.occurred_at < range_to
                                     and (e.xid, e.id) >= (w.position_xid, w.position_id)
                                     and e.customer_id % w.shard_count = w.shard
                                   limit 1) pending) then
        raise exception 'month % has events not rolled up yet: run the rollup (meterctl rollup run)', p_month
            using errcode = '55000';
    end if;
    if exists (select 1 from meter.event_cancellations x join meter.events e on e.id = x.event_id
               where e.occurred_at >= range_from and e.occurred_at < range_to and x.rolled_up_at is null) then
        raise exception 'month % has cancellations not rolled up yet: run the rollup (meterctl rollup run)', p_month
            using errcode = '55000';
    end if;
    -- (and duplicates the ledger has not counted yet: once the month is gone, the fold could not
    -- find their events)
    if exists (select 1 from meter.rollup_watermark w
               cross join lateral (select 1 from meter.event_redeliveries r
                                   where r.occurred_at >= range_from and r.occurred_at < range_to
                                     and r.verdict = 'duplicate'
                                     and (r.xid, r.id) >= (w.redeliveries_xid, w.redeliveries_id)
                                     and r.customer_id % w.shard_count = w.shard
                                   limit 1) pending) then
        raise exception 'month % has duplicates not counted in the rollup''s ledger yet: run the rollup (meterctl rollup run)', p_month
            using errcode = '55000';
    end if;

    -- Each (customer, billing period) the month's events fall in, its plan and its invoice.
    create temp table if not exists events_archive_pairs (customer_id bigint, period text, period_end timestamptz,
                                                          plan_id bigint, invoiced boolean, events bigint) on commit drop;
    truncate events_archive_pairs;
    insert into events_archive_pairs
    select p.customer_id, p.period,
           (p.period_start_local + interval '1 month') at time zone p.tz,
           (select cp.plan_id from meter.customer_plans cp
            where cp.customer_id = p.customer_id and cp.effective_from <= p.period
            order by cp.effective_from desc limit 1),
           exists (select 1 from meter.invoices i where i.customer_id = p.customer_id and i.period = p.period),
           p.events
    from (
        select e.customer_id, c.billing_timezone as tz,
               meter._period_of(c.billing_timezone, e.occurred_at) at time zone c.billing_timezone as period_start_local,
               pg_catalog.to_char(meter._period_of(c.billing_timezone, e.occurred_at) at time zone c.billing_timezone, 'YYYY-MM') as period,
               pg_catalog.count(*) as events
        from meter.events e join meter.customers c on c.id = e.customer_id
        where e.occurred_at >= range_from and e.occurred_at < range_to
        group by 1, 2, 3, 4
    ) p;

    -- Every billing period the month's events fall in must be past its own late window too: a
    -- local month ends up to 14 hours after (or 12 before) the UTC month, and a late event of
    -- its other UTC month would be adjusted by hashing this month's events as well.
    select pg_catalog.format('customer %s, period %s: its late window is open until %s',
                             c.external_id, a.period, a.period_end + p_late_window)
      into v_problem
    from events_archive_pairs a join meter.customers c on c.id = a.customer_id
    where pg_catalog.now() < a.period_end + p_late_window
    order by a.period_end desc, c.external_id limit 1;
    if v_problem is not null then
        raise exception 'month % cannot be archived: %', p_month, v_problem using errcode = '55000';
    end if;

    select pg_catalog.format('customer %s, period %s: not closed (%s events; meterctl close --period %s)',
                             c.external_id, a.period, a.events, a.period)
      into v_problem
    from events_archive_pairs a join meter.customers c on c.id = a.customer_id
    where a.plan_id is not null and not a.invoiced
    order by a.period, c.external_id limit 1;
    if v_problem is not null then
        raise exception 'month % cannot be archived: %', p_month, v_problem using errcode = '55000';
    end if;

    -- Every change that arrived after a close (a late event, a cancellation) must be invoiced
    -- as an adjustment already (a later close of the customer after it): an adjustment made
    -- later would hash events this archive removes.
    select pg_catalog.format('customer %s, period %s: a change of %s after its close is not invoiced yet (close the next period first)',
                             c.external_id, i.period, x.arrived_at)
      into v_problem
    from meter.events e
    join meter.customers c on c.id = e.customer_id
    join meter.invoices i on i.customer_id = e.customer_id
                         and i.period_start = meter._period_of(c.billing_timezone, e.occurred_at)
    cross join lateral (
        select e.received_at as arrived_at where e.received_at > i.closed_at
        union all
        select xc.cancelled_at from meter.event_cancellations xc where xc.event_id = e.id and xc.cancelled_at > i.closed_at
    ) x
    where e.occurred_at >= range_from and e.occurred_at < range_to
      and not exists (select 1 from meter.invoices ai
                      where ai.customer_id = e.customer_id and ai.period_start > i.period_start and ai.closed_at > x.arrived_at)
    order by x.arrived_at limit 1;
    if v_problem is not null then
        raise exception 'month % cannot be archived: %', p_month, v_problem using errcode = '55000';
    end if;

    -- A sign-off counts when it came after the period's last close (one made before some
    -- customers were closed did not see their invoices).
    select pg_catalog.format('period %s is not signed off since its last close (meterctl signoff --period %s --by NAME)', a.period, a.period)
      into v_problem
    from events_archive_pairs a
    where a.invoiced
      and not exists (select 1 from meter.period_signoffs s
                      where s.period = a.period
                        and s.signed_at >= (select pg_catalog.max(i.closed_at) from meter.invoices i where i.period = a.period))
    order by a.period limit 1;
    if v_problem is not null then
        raise exception 'month % cannot be archived: %', p_month, v_problem using errcode = '55000';
    end if;

    select coalesce(pg_catalog.sum(a.events), 0),
           coalesce(pg_catalog.array_agg(distinct a.period) filter (where a.invoiced), '{}'),
           coalesce(pg_catalog.sum(a.events) filter (where a.plan_id is null), 0)
      into events, periods, unbilled_events
    from events_archive_pairs a;
    return next;
end;
$$;

comment on function meter.events_archive_check(text, interval) is
    'Whether a UTC month of events may be archived (attached, past its late window, rolled up, closed, signed off); raises 55000 with the reason.';
revoke all on function meter.events_archive_check(text, interval) from public;
