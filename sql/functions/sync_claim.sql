-- meter.sync_claim(worker, limit, lease): hand out due outbox hours to one sync worker.
--
-- Returns, for each claimed hour, exactly what to send: the absolute total under the meter
-- version in force at that hour, the Idempotency-Key, the subscription item, and the claim token
-- the worker reports back with (meter.sync_succeeded / meter.sync_failed).
--
-- Guarantees
--   * Never two sends for one hour at once: rows are locked FOR UPDATE SKIP LOCKED (concurrent
--     workers take different rows, never wait) and move to in_flight with a fresh claim token.
--   * A worker that dies mid-send loses its claim after `lease`; the hour is then handed out again
--     (with the same request, see below). Reports carrying an old token are ignored.
--   * Never an older total after a newer one: while a send's outcome is unknown (sending_*), a
--     claim repeats that very request (same key, same quantity) instead of the newest revision.
--     The engine's idempotency makes the repeat either a replay or the one application.
--   * Hours of (customer, meter) pairs not yet linked to a subscription item are skipped; the
--     worker links them first (meter.billing_unlinked, meter.billing_link_record).
--
-- The quantity per aggregation: count -> events, sum -> quantity, max -> the hour's maximum
-- (0 when every event was cancelled; through a Billing Meter, the running maximum of the hour's
-- UTC month, decision 102), unique_count -> distinct values in the hour (billed as a sum of
-- hourly distinct counts; docs/decisions.md). Exact numeric, never rounded here. The revision
-- sent is the outbox's (equal to the rollup's, or ahead of it for a running maximum).
--
-- Meters the customer's plan prices per filter of their dimensions (decision 110): `lines` holds
-- one figure per priced filter (meter._hour_lines: [{filter, suffix, quantity}]), each sent as a
-- meter event to its own engine meter (event name + suffix, identifier = idempotency_key +
-- suffix); `quantity` stays the whole meter's. Null for every other meter. Kept with the claim
-- (sending_lines) and repeated as is while the outcome is unknown, like the quantity.
create or replace function meter.sync_claim(
    p_worker text,
    p_limit  integer default 100,
    p_lease  interval default '60 seconds')
returns table (
    customer_id          bigint,
    meter_id             bigint,
    hour                 timestamptz,
    revision             bigint,
    quantity             numeric,
    idempotency_key      text,
    subscription_item_id text,
    claim_token          bigint,
    attempts             integer,
    lines                jsonb)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
set timezone = 'UTC'
as $$
#variable_conflict use_column
declare
    v_taken     integer;
    v_customers bigint[];
    v_meters    bigint[];
    v_hours     timestamptz[];
    v_filtered  bigint[];
begin
    if p_worker is null or length(p_worker) = 0 then
        raise exception 'worker must be a non-empty name' using errcode = '22023';
    end if;
    if p_limit is null or p_limit < 1 then
        raise exception 'limit must be a positive integer, got %', coalesce(p_limit::text, 'null')
            using errcode = '22023';
    end if;
    if p_lease is null or p_lease <= interval '0' then
        raise exception 'lease must be a positive interval' using errcode = '22023';
    end if;

    -- 1. Claims whose worker went silent past the lease (rare: a crash or a hang), then
    -- 2. pending hours whose backoff has elapsed, oldest due first, from the partial indexes.
    select coalesce(pg_catalog.array_agg(x.customer_id), '{}'), coalesce(pg_catalog.array_agg(x.meter_id), '{}'),
           coalesce(pg_catalog.array_agg(x.hour), '{}')
      into v_customers, v_meters, v_hours
    from (select o.customer_id, o.meter_id, o.hour
          from meter.sync_outbox o
          where o.state = 'in_flight' and o.claimed_at < pg_catalog.now() - p_lease
          order by o.claimed_at
          limit p_limit
          for update of o skip locked) x;
    v_taken := pg_catalog.cardinality(v_customers);

    if v_taken < p_limit then
        select v_customers || coalesce(pg_catalog.array_agg(x.customer_id), '{}'),
               v_meters || coalesce(pg_catalog.array_agg(x.meter_id), '{}'),
               v_hours || coalesce(pg_catalog.array_agg(x.hour), '{}')
          into v_customers, v_meters, v_hours
        from (select o.customer_id, o.meter_id, o.hour
              from meter.sync_outbox o
              where o.state = 'pending' and o.next_attempt_at <= pg_catalog.now()
                and exists (select 1 from meter.billing_links l
                            where l.customer_id = o.customer_id and l.meter_id = o.meter_id)
              order by o.next_attempt_at
              limit p_limit - v_taken
              for update of o skip locked) x;
    end if;

    -- 3. Billing Meters take events up to 35 days back, even into a period the engine has
    -- invoiced: an hour of a period we have closed (after the engine, EngineAlignment) is not
    -- sent but closed, as the legacy API's timestamp_too_early made it (sync_failed): our next
    -- invoice's adjustment line carries the change (decision 66). An uncertain request is still
    -- repeated first.
    update meter.sync_outbox o
    set state = 'closed', unsynced_since = null, attempts = 0, next_attempt_at = pg_catalog.now(),
        claim_token = null, claimed_by = null, claimed_at = null, last_error = null
    from rows from (pg_catalog.unnest(v_customers), pg_catalog.unnest(v_meters), pg_catalog.unnest(v_hours))
         as c(customer_id, meter_id, hour)
    where o.customer_id = c.customer_id and o.meter_id = c.meter_id and o.hour = c.hour
      and o.sending_key is null
      and exists (select 1 from meter.billing_prices b where b.meter_id = o.meter_id and b.engine_api = 'meter_events')
      and exists (select 1 from meter.invoices i
                  where i.customer_id = o.customer_id and o.hour >= i.period_start and o.hour < i.period_end);

    -- Meters some plan prices per filter: only their hours look up the customer's plan.
    v_filtered := array(select distinct pp.meter_id from meter.plan_prices pp where pp.filter <> '{}'::jsonb);

    return query
    with picked as (
        -- What to send: the pending uncertain request if there is one, else the current revision
        -- with its total (rollup_hourly and the outbox change in the same transactions, so the
        -- revision and the totals read here belong together).
        select o.customer_id, o.meter_id, o.hour,
               coalesce(o.sending_revision, o.revision) as send_revision,
               coalesce(o.sending_quantity,
                        case v.aggregation
                            when 'count' then r.event_count::numeric
                            when 'sum' then r.quantity
                            when 'time_weighted_sum' then r.quantity
                            when 'max' then
                                case when b.engine_api = 'meter_events' then
                                    -- the running maximum of the hour's UTC month (decision 102)
                                    (select coalesce(pg_catalog.max(r2.max_value), 0) from meter.rollup_hourly r2
                                     where r2.customer_id = o.customer_id and r2.meter_id = o.meter_id
                                       and r2.hour >= pg_catalog.date_trunc('month', o.hour) and r2.hour <= o.hour)
                                else coalesce(r.max_value, 0) end
                            when 'latest' then
                                -- the running last value of the hour's UTC month (as max's running
                                -- maximum): an hour whose events were all cancelled carries the
                                -- month's last value before it, so the engine's last stays right
                                (select coalesce((pg_catalog.array_agg(r2.latest_value order by r2.latest_at desc, r2.latest_key collate "C" desc)
                                                  filter (where r2.latest_at is not null))[1], 0)
                                 from meter.rollup_hourly r2
                                 where r2.customer_id = o.customer_id and r2.meter_id = o.meter_id
                                   and r2.hour >= pg_catalog.date_trunc('month', o.hour) and r2.hour <= o.hour)
                            when 'unique_count' then
                                (select pg_catalog.count(*) from meter.rollup_hourly_unique u
                                 where u.customer_id = o.customer_id and u.meter_id = o.meter_id
                                   and u.hour = o.hour and u.event_count > 0)::numeric
                        end) as send_quantity,
               case when o.sending_key is not null then o.sending_lines
                    when o.meter_id = any (v_filtered) then meter._hour_lines(o.customer_id, o.meter_id, o.hour)
               end as send_lines,
               o.sending_key
        from rows from (pg_catalog.unnest(v_customers), pg_catalog.unnest(v_meters), pg_catalog.unnest(v_hours))
             as c(customer_id, meter_id, hour)
        join meter.sync_outbox o
          on o.customer_id = c.customer_id and o.meter_id = c.meter_id and o.hour = c.hour
        join meter.rollup_hourly r
          on r.customer_id = o.customer_id and r.meter_id = o.meter_id and r.hour = o.hour
        join meter.meter_version_ranges v
          on v.meter_id = o.meter_id and o.hour >= v.effective_from and o.hour < v.effective_until
        join meter.billing_prices b on b.meter_id = o.meter_id
    )
    update meter.sync_outbox o
    set state            = 'in_flight',
        claim_token      = pg_catalog.nextval('meter.sync_claim_token'),
        claimed_by       = p_worker,
        claimed_at       = pg_catalog.now(),
        attempts         = o.attempts + 1,
        last_attempt_at  = pg_catalog.now(),
        sending_revision = p.send_revision,
        sending_quantity = p.send_quantity,
        sending_lines    = p.send_lines,
        sending_key      = coalesce(p.sending_key,
                                    pg_catalog.format('meter-%s-%s-%s-r%s', o.customer_id, o.meter_id,
                                                      extract(epoch from o.hour)::bigint, p.send_revision))
    from picked p
    -- (the meter's item; a meter priced per filter has one per filter: its default's, else any)
    cross join lateral (select l1.subscription_item_id from meter.billing_links l1
                        where l1.customer_id = p.customer_id and l1.meter_id = p.meter_id
                        order by l1.price_filter = '{}'::jsonb desc, l1.price_filter limit 1) l
    where o.customer_id = p.customer_id and o.meter_id = p.meter_id and o.hour = p.hour
      and o.state <> 'closed'
    returning o.customer_id, o.meter_id, o.hour, o.sending_revision, o.sending_quantity, o.sending_key,
              l.subscription_item_id, o.claim_token, o.attempts, o.sending_lines;
end;
$$;

comment on function meter.sync_claim(text, integer, interval) is
    'Claims due outbox hours (SKIP LOCKED) for one worker: what to send, its Idempotency-Key and a claim token.';

revoke all on function meter.sync_claim(text, integer, interval) from public;
