-- 0022_reconciliation_lookups: meter.reconciliation looks up the engine's invoice lines of each
-- of our lines by (customer, meter) and overlapping period; without an index each line scanned
-- the whole table (about an eighth of the report's time on the default replay, growing with
-- every month the engine invoices). Issue 21 (reconciliation without rescanning).
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.
create index billing_invoice_lines_customer_meter on meter.billing_invoice_lines (customer_id, meter_id, period_start);
