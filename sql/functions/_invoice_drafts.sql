-- meter._invoice_drafts(customer_ids, plan_ids, starts, ends, with_hashes): the lines the invoices
-- of many customers would have if their periods were closed now (customer i: plan_ids[i], period
-- [starts[i], ends[i])), in one statement; the one pricing of meter.period_close (which writes them
-- for every customer it closes) and of meter.invoice_preview (one customer, meter._invoice_draft).
--
--   * one 'usage' line per price of the plan, per meter and, for a meter priced per filter of its
--     dimensions, per filter then its default (decision 110): event count and quantity from the
--     rollups (meter._line_figures), amount by meter.price_amount (the one rounding rule);
--   * one 'adjustment' line per earlier closed period and line whose figures moved since they
--     were invoiced (events or cancellations that arrived after that close): the difference in
--     events, quantity and amount (re-priced with that period's plan, minus everything already
--     invoiced for it, adjustments included).
-- Line numbers per customer in that order from 1: usage lines by meter code, filtered prices
-- before the default, then by filter; adjustments by period, then the same. events_hash only when
-- with_hashes (the close stores it; a preview of an open period does not need to hash its
-- events), and for adjustments only on the lines emitted.
--
-- Set-based: the figures of every line of every customer come from two calls of
-- meter._line_figures (the usage lines; the earlier periods' lines; both reading a whole billing
-- period's totals from meter.rollup_period) and their hashes from two of
-- meter._line_hashes (the usage lines; the adjustments found), instead of a few statements per
-- line.
--
-- Reads only: the caller decides whether the rollups are complete (period_close refuses while
-- they are not; a preview says how fresh they are).
create or replace function meter._invoice_drafts(
    p_customer_ids bigint[],
    p_plan_ids     bigint[],
    p_starts       timestamptz[],
    p_ends         timestamptz[],
    p_with_hashes  boolean default true)
returns table (customer_id bigint, line_no integer, kind text, meter_id bigint, price_filter jsonb, adjusts_period text,
               event_count bigint, quantity numeric, amount bigint, events_hash text, description text)
language plpgsql
stable
set search_path = pg_catalog, pg_temp
set jit = off  -- large cost estimates over arrays made JIT compile for ~1 s per call (decision 120)
set plan_cache_mode = force_generic_plan  -- one plan, kept: a preview replanned its one statement every call (3 ms -> 1 ms)
set timezone = 'UTC'
as $$
#variable_conflict use_column
begin
    return query
    with batch as (
        select b.customer_id, b.plan_id, b.p_start, b.p_end, b.pos
        from rows from (pg_catalog.unnest(p_customer_ids), pg_catalog.unnest(p_plan_ids),
                        pg_catalog.unnest(p_starts), pg_catalog.unnest(p_ends))
             with ordinality as b(customer_id, plan_id, p_start, p_end, pos)
    ),
    -- Usage lines: one per price of the customer's plan.
    usage_req as materialized (
        select pg_catalog.row_number() over (order by b.pos, m.code, pp.filter = '{}'::jsonb, pp.filter)::integer as k,
               b.pos, b.customer_id, pp.plan_id, pp.meter_id, pp.filter, b.p_start, b.p_end,
               m.code as meter_code, pp.model, pp.unit_amount, pp.package_size, pp.tiers,
               exists (select 1 from meter.plan_prices f
                       where f.plan_id = pp.plan_id and f.meter_id = pp.meter_id and f.filter <> '{}'::jsonb) as has_filters,
               pg_catalog.row_number() over (partition by b.pos
                                             order by m.code, pp.filter = '{}'::jsonb, pp.filter)::integer as ord
        from batch b
        join meter.plan_prices pp on pp.plan_id = b.plan_id
        join meter.meters m on m.id = pp.meter_id
    ),
    -- The usage lines as requests of meter._line_figures / meter._line_hashes (arrays in k order).
    usage_arrays as (
        select pg_catalog.array_agg(u.customer_id order by u.k) as customer_ids,
               pg_catalog.array_agg(u.meter_id order by u.k) as meter_ids,
               pg_catalog.array_agg(u.p_start order by u.k) as froms,
               pg_catalog.array_agg(u.p_end order by u.k) as tos,
               pg_catalog.array_agg(u.plan_id order by u.k) as plan_ids,
               pg_catalog.array_agg(u.filter order by u.k) as filters
        from usage_req u
    ),
    usage_fig as (
        select f.* from usage_arrays x
        cross join lateral meter._line_figures(x.customer_ids, x.meter_ids, x.froms, x.tos, x.plan_ids, x.filters) f
    ),
    usage_hash as (
        select h.* from usage_arrays x
        cross join lateral meter._line_hashes(x.customer_ids, x.meter_ids, x.froms, x.tos, x.plan_ids, x.filters) h
        where p_with_hashes
    ),
    -- Adjustment candidates: every usage line of the customer's earlier closed periods, with
    -- what was invoiced for it so far (the line, then its adjustments).
    old_lines as (
        select b.pos, b.customer_id, oi.period, oi.period_start, oi.period_end, oi.plan_id, l.meter_id, l.price_filter,
               m.code as meter_code, pp.model, pp.unit_amount, pp.package_size, pp.tiers,
               exists (select 1 from meter.plan_prices f
                       where f.plan_id = oi.plan_id and f.meter_id = l.meter_id and f.filter <> '{}'::jsonb) as has_filters,
               pg_catalog.sum(l.event_count) as n, pg_catalog.sum(l.quantity) as q, pg_catalog.sum(l.amount) as a
        from batch b
        join meter.invoices oi on oi.customer_id = b.customer_id and oi.period_start < b.p_start
        join meter.invoice_lines l on l.kind = 'usage' and l.invoice_id = oi.id
        join meter.meters m on m.id = l.meter_id
        join meter.plan_prices pp on pp.plan_id = oi.plan_id and pp.meter_id = l.meter_id and pp.filter = l.price_filter
        group by b.pos, b.customer_id, oi.period, oi.period_start, oi.period_end, oi.plan_id, l.meter_id, l.price_filter,
                 m.code, pp.model, pp.unit_amount, pp.package_size, pp.tiers
    ),
    adj_req as materialized (
        select pg_catalog.row_number() over (order by o.pos, o.period_start, o.meter_code,
                                                      o.price_filter = '{}'::jsonb, o.price_filter)::integer as k,
               o.*,
               o.n + coalesce(s.n, 0) as n_so_far, o.q + coalesce(s.q, 0) as q_so_far, o.a + coalesce(s.a, 0) as a_so_far
        from old_lines o
        left join lateral (
            select pg_catalog.sum(a.event_count) as n, pg_catalog.sum(a.quantity) as q, pg_catalog.sum(a.amount) as a
            from meter.invoice_lines a join meter.invoices ai on ai.id = a.invoice_id
            where ai.customer_id = o.customer_id and a.kind = 'adjustment' and a.adjusts_period = o.period
              and a.meter_id = o.meter_id and a.price_filter = o.price_filter
        ) as s on true
    ),
    adj_fig as (
        select f.*
        from (select pg_catalog.array_agg(a.customer_id order by a.k) as customer_ids,
                     pg_catalog.array_agg(a.meter_id order by a.k) as meter_ids,
                     pg_catalog.array_agg(a.period_start order by a.k) as froms,
                     pg_catalog.array_agg(a.period_end order by a.k) as tos,
                     pg_catalog.array_agg(a.plan_id order by a.k) as plan_ids,
                     pg_catalog.array_agg(a.price_filter order by a.k) as filters
              from adj_req a) as x
        cross join lateral meter._line_figures(x.customer_ids, x.meter_ids, x.froms, x.tos, x.plan_ids, x.filters) f
    ),
    -- The adjustments: the candidates whose figures moved.
    adj as materialized (
        select a.*, f.event_count as n_now, f.quantity as q_now,
               meter.price_amount(a.model, a.unit_amount, a.package_size, a.tiers, f.quantity) as a_now,
               pg_catalog.row_number() over (order by a.k)::integer as hk  -- its request in adj_hash
        from adj_req a
        join adj_fig f on f.i = a.k
        where f.event_count <> a.n_so_far or f.quantity <> a.q_so_far
           or meter.price_amount(a.model, a.unit_amount, a.package_size, a.tiers, f.quantity) <> a.a_so_far
    ),
    adj_hash as (
        select h.*
        from (select pg_catalog.array_agg(a.customer_id order by a.hk) as customer_ids,
                     pg_catalog.array_agg(a.meter_id order by a.hk) as meter_ids,
                     pg_catalog.array_agg(a.period_start order by a.hk) as froms,
                     pg_catalog.array_agg(a.period_end order by a.hk) as tos,
                     pg_catalog.array_agg(a.plan_id order by a.hk) as plan_ids,
                     pg_catalog.array_agg(a.price_filter order by a.hk) as filters
              from adj a) as x
        cross join lateral meter._line_hashes(x.customer_ids, x.meter_ids, x.froms, x.tos, x.plan_ids, x.filters) h
        where p_with_hashes
    ),
    lines as (
        select u.pos, u.customer_id, u.ord as line_no, 'usage'::text as kind, u.meter_id, u.filter as price_filter,
               null::text as adjusts_period, f.event_count, f.quantity,
               meter.price_amount(u.model, u.unit_amount, u.package_size, u.tiers, f.quantity) as amount,
               uh.events_hash,
               pg_catalog.format('%s%s: %s (%s, %s)', u.meter_code, meter._filter_label(u.filter, u.has_filters),
                                 pg_catalog.trim_scale(f.quantity), f.aggregation, u.model) as description
        from usage_req u
        join usage_fig f on f.i = u.k
        left join usage_hash uh on uh.i = u.k
        union all
        select a.pos, a.customer_id,
               (select pg_catalog.count(*) from usage_req u where u.pos = a.pos)::integer
               + pg_catalog.row_number() over (partition by a.pos order by a.k)::integer,
               'adjustment', a.meter_id, a.price_filter, a.period,
               (a.n_now - a.n_so_far)::bigint, a.q_now - a.q_so_far, (a.a_now - a.a_so_far)::bigint,
               h.events_hash,
               pg_catalog.format('%s%s: adjustment for %s (events or cancellations after its close): %s -> %s',
                                 a.meter_code, meter._filter_label(a.price_filter, a.has_filters), a.period,
                                 pg_catalog.trim_scale(a.q_so_far), pg_catalog.trim_scale(a.q_now))
        from adj a
        left join adj_hash h on h.i = a.hk
    )
    select l.customer_id, l.line_no, l.kind, l.meter_id, l.price_filter, l.adjusts_period,
           l.event_count, l.quantity, l.amount, l.events_hash, l.description
    from lines l
    order by l.pos, l.line_no;
end;
$$;

comment on function meter._invoice_drafts(bigint[], bigint[], timestamptz[], timestamptz[], boolean) is
    'The lines many customers'' invoices would have if closed now (usage per price, adjustments), in one statement: the pricing of period_close and invoice_preview.';
revoke all on function meter._invoice_drafts(bigint[], bigint[], timestamptz[], timestamptz[], boolean) from public;
