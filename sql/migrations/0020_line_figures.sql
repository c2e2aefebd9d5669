-- 0020_line_figures: issue 21's set-based close (meter._invoice_drafts over meter._line_figures
-- and meter._line_hashes, functions only).
--
-- meter.period_close takes a fourth parameter, the customers of a batch (meterctl close passes
-- its batch in one call, where it called the function once per customer); the three-parameter
-- function goes, and sql/functions/period_close.sql creates the new one (calls with one to three
-- arguments are unchanged).
drop function if exists meter.period_close(text, text, interval);
