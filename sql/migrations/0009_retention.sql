-- 0009_retention: bounded growth for what is kept only for tracing (issue 13: the payload of
-- every conflicting redelivery and every billing webhook were kept forever).
--
-- meter.retention_prune() (sql/functions/retention_prune.sql) clears a conflict's offered
-- payload once it is older than the retention, keeping its SHA-256 so a resend can still be
-- matched, and deletes billing webhooks processed longer ago than theirs. The redelivery rows
-- themselves stay: the reconciliation counts duplicates from them (their partitioning is the
-- events-partitioning issue's). Both partial indexes below cover only what pruning reads.
--
-- Forward-only, like every migration: never edit after it has been applied anywhere.

set local client_min_messages = warning;

alter table meter.event_redeliveries
    add column offered_sha256 bytea,
    add column offered_pruned_at timestamptz;
comment on column meter.event_redeliveries.offered_sha256 is
    'SHA-256 of offered::text, kept when retention cleared offered (meter.retention_prune).';
comment on column meter.event_redeliveries.offered_pruned_at is
    'When retention cleared offered; NULL while it is kept.';

create index event_redeliveries_offered_kept on meter.event_redeliveries (received_at)
    where offered is not null;
create index webhook_events_processed on meter.webhook_events (processed_at)
    where processed_at is not null;
