-- meter.late_after_close: what arrived for a period after its close. Nothing here is dropped:
-- events are stored and rolled up like any other, and the next close adds an adjustment line
-- for their period (adjusted_on names that invoice's period; null = not adjusted yet).
--
-- adjusted_on is the period of the customer's first close of a later period made after the row
-- arrived: that close computed the adjustments of every earlier closed period from the rollups,
-- which it refuses to read while anything of them is pending, so it took the row into account.
-- Usually it holds the adjustment line of the row's meter; when the late rows of a meter cancel
-- out before that close (a late event cancelled again) the figures did not move and no line was
-- needed, and the rows are adjusted all the same (they would otherwise stay "not adjusted" forever).
--   kind 'event'         an event that occurred in a closed period and was received after its close
--   kind 'cancellation'  a cancellation, made after the close, of an event of that period
create or replace view meter.late_after_close as
select c.external_id as customer, m.code as meter, i.period, x.kind, x.event_id, e.idempotency_key,
       e.occurred_at, x.arrived_at, e.value, i.closed_at,
       (select ai.period from meter.invoices ai
        where ai.customer_id = i.customer_id and ai.period_start > i.period_start and ai.closed_at > x.arrived_at
        order by ai.closed_at, ai.period_start limit 1) as adjusted_on
from meter.invoices i
join meter.events e
  on e.customer_id = i.customer_id and e.occurred_at >= i.period_start and e.occurred_at < i.period_end
cross join lateral (
    select 'event'::text as kind, e.id as event_id, e.received_at as arrived_at where e.received_at > i.closed_at
    union all
    select 'cancellation', e.id, xc.cancelled_at
    from meter.event_cancellations xc where xc.event_id = e.id and xc.cancelled_at > i.closed_at
) x
join meter.customers c on c.id = i.customer_id
join meter.meters m on m.id = e.meter_id;

comment on view meter.late_after_close is
    'Events and cancellations that arrived for a period after its close, and the invoice that adjusted them.';
grant select on meter.late_after_close to meter_analyst;
