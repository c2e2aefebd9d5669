-- 0020_line_figures: the figures of invoice lines computed for many lines at once
-- (meter._line_figures, meter._line_hashes; issue 21's set-based close).
--
-- meter.period_close takes a fourth parameter, the customers of a batch (meterctl close passes
-- its batch in one call, where it called the function once per customer); the three-parameter
-- function goes, and sql/functions/period_close.sql creates the new one (calls with one to three
-- arguments are unchanged).
drop function if exists meter.period_close(text, text, interval);
--
-- meter._line_events listed the raw events of one invoice line for meter._line_hash; the hashes
-- are now computed by meter._line_figures, for every line of a close in one statement, which
-- reads the events itself (a function call per line was the per-customer cost being removed).
-- Nothing else called it.
drop function if exists meter._line_events(bigint, bigint, timestamptz, timestamptz, bigint, jsonb);

-- meter._line_figures reads a billing period's totals (meter.rollup_period) when a line's range is
-- exactly one billing period of its customer, which takes the customer's billing timezone; the
-- reconciliation calls it with meter_analyst's rights. The analyst may read that column (and the
-- id to join it), not the rest of the customer (external id, name).
grant select (id, billing_timezone) on meter.customers to meter_analyst;
