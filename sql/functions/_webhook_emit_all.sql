-- meter._webhook_emit_all(type, keys, payloads): records outgoing webhook messages of one type for
-- many occurrences at once (keys[i] with payloads[i]), in the caller's transaction, with one
-- delivery per message and enabled endpoint that takes the type. The one implementation of an
-- emit: meter._webhook_emit is this for one occurrence; meter.period_close announces all the
-- invoices of a close with one call.
--
-- The message id is msg_ + the first 32 hex digits of the SHA-256 of the type and key, so the same
-- occurrence emitted again (a retried transaction, a second close) is the same message and is not
-- delivered twice. Returns the ids of the messages recorded now (an occurrence already recorded
-- returns nothing), in the keys' order. NOTIFY meter_webhooks_out wakes the delivery worker after
-- the commit when a delivery was recorded. A null type, key or payload: 22023, nothing recorded.
create or replace function meter._webhook_emit_all(p_type text, p_keys text[], p_payloads jsonb[])
returns table (message_id text)
language plpgsql
volatile
set search_path = pg_catalog, pg_temp
as $$
#variable_conflict use_column
declare
    v_ids text[];
begin
    if p_type is null or pg_catalog.cardinality(p_keys) is distinct from pg_catalog.cardinality(p_payloads)
       or exists (select 1 from rows from (pg_catalog.unnest(p_keys), pg_catalog.unnest(p_payloads)) as x(k, p)
                  where x.k is null or x.p is null) then
        raise exception 'type, key and payload are required' using errcode = '22023';
    end if;
    -- Each occurrence's id computed once; the ids recorded now, in the keys' order (ids are
    -- hashes: the order comes from the keys).
    with wanted as (
        select x.n, 'msg_' || pg_catalog.left(pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(p_type || E'\n' || x.k, 'UTF8')), 'hex'), 32) as id,
               x.p
        from rows from (pg_catalog.unnest(p_keys), pg_catalog.unnest(p_payloads)) with ordinality as x(k, p, n)
    ),
    recorded as (
        insert into meter.webhook_messages (id, type, payload)
        select w.id, p_type, w.p from wanted w order by w.n
        on conflict do nothing
        returning id
    )
    -- (a key given twice is one occurrence: recorded once, at its first place)
    select pg_catalog.array_agg(f.id order by f.n) into v_ids
    from (select distinct on (w.id) w.id, w.n
          from wanted w join recorded r on r.id = w.id
          order by w.id, w.n) as f;
    if v_ids is null then
        return;
    end if;
    insert into meter.webhook_deliveries (message_id, endpoint_id)
    select m.id, e.id
    from pg_catalog.unnest(v_ids) with ordinality as m(id, n)
    cross join meter.webhook_endpoints e
    where e.enabled and p_type = any (e.event_types)
    order by m.n, e.id;
    if found then
        perform pg_catalog.pg_notify('meter_webhooks_out', '');
    end if;
    return query select m.id from pg_catalog.unnest(v_ids) with ordinality as m(id, n) order by m.n;
end;
$$;

comment on function meter._webhook_emit_all(text, text[], jsonb[]) is
    'Records outgoing webhook messages of one type for many occurrences (once per occurrence key) and their deliveries: the one implementation of an emit.';
revoke all on function meter._webhook_emit_all(text, text[], jsonb[]) from public;
