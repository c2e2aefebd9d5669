-- 0006_invoice_status_ranks: an uncollectible invoice is not final. Stripe lets it still be paid
-- or voided, so its rank now sits below theirs: draft 1, open 2, uncollectible 3, paid/void 4
-- (meter.webhook_process moves a status only to a higher rank; decision 87).
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

update meter.billing_invoices set status_rank = 4 where status in ('paid', 'void') and status_rank = 3;

comment on column meter.billing_invoices.status_rank is
    'draft 1, open 2, uncollectible 3, paid/void 4: never lowered (meter.webhook_process).';
