#!/usr/bin/env bash
# `meterctl events archive` end to end on a scratch database (scripts/test.sh runs it after the
# pgTAP files): closed history of 2024 (seed.sql), then the refusals (not signed off, one of two
# periods signed, the late window open, not closed), then an archive of May 2024 and what works
# and what stops after it. Prints TAP lines (ok N - ...); exits 1 when one fails.
# Usage: Tests/archive/archive_test.sh <conninfo of a cluster where databases can be created>
set -uo pipefail
cd "$(dirname "$0")/../.."
conninfo=$1
db=meter_archive_$$
dir=$(mktemp -d)
trap 'rm -rf "$dir"; psql -X -q "$conninfo" -c "drop database if exists $db" >/dev/null 2>&1 || true' EXIT
psql -X -q "$conninfo" -c "drop database if exists $db" -c "create database $db" || exit 1
dbci="${conninfo/dbname=meter/dbname=$db}"
m() { DATABASE_URL="$dbci" .build/debug/meterctl "$@" --log-level warning; }
q() { psql -X -q -A -t -v ON_ERROR_STOP=1 "$dbci" -c "$1"; }
n=0; failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
nok() { n=$((n + 1)); failed=$((failed + 1)); echo "not ok $n - $1"; [[ -n "${2:-}" ]] && sed 's/^/#   /' <<<"$2"; }
is() { if [[ "$1" == "$2" ]]; then ok "$3"; else nok "$3" "have: $1"$'\n'"want: $2"; fi; }
refused() {  # refused "<description>" "<expected text>" args...
  local what=$1 want=$2; shift 2
  local out; out=$(m events archive "$@" 2>&1)
  if [[ $? -ne 0 ]] && grep -qF -- "$want" <<<"$out"; then ok "$what"; else nok "$what" "$out"; fi
}

m migrate >/dev/null || exit 1
psql -X -q -v ON_ERROR_STOP=1 "$dbci" -f Tests/archive/seed.sql >/dev/null || exit 1
q "select events_folded from meter.rollup_run()" >/dev/null
m close --period 2024-04 >/dev/null && m close --period 2024-05 >/dev/null || { echo "setup: close failed"; exit 1; }
# a late event of May after May's close, and a cancellation after it: adjusted on June's invoice
q "select status from meter.event_ingest('[{\"customer\": \"arc-utc\", \"meter\": \"arc.calls\", \"idempotency_key\": \"late-may\", \"occurred_at\": \"2024-05-20T10:00:00Z\"}]'::jsonb, interval '5 minutes', interval '10 years')" >/dev/null
q "select status from meter.event_cancel('[{\"customer\": \"arc-utc\", \"idempotency_key\": \"a-1203\"}]')" >/dev/null
q "select events_folded from meter.rollup_run()" >/dev/null
m close --period 2024-06 >/dev/null || { echo "setup: close of June failed"; exit 1; }
before=$(q "select string_agg(i.id || ':' || i.total || ':' || l.line_no || ':' || l.quantity || ':' || l.events_hash, ',' order by i.id, l.line_no) from meter.invoices i join meter.invoice_lines l on l.invoice_id = i.id")
usage_before=$(q "select sum(quantity) || '/' || sum(event_count) from meter.usage('arc-utc', 'arc.calls', '2024-05-01 00:00+00', '2024-06-01 00:00+00', 'day')")
may_outbox=$(q "select count(*) from meter.sync_outbox where hour >= '2024-05-01 00:00+00' and hour < '2024-06-01 00:00+00'")
may_events=$(q "select count(*) from meter.events where occurred_at >= '2024-05-01 00:00+00' and occurred_at < '2024-06-01 00:00+00'")
is "$(q "select count(*) > 700 from meter.events_2024_05")" "t" "setup: May 2024 holds $may_events events"

# Refusals, each leaving everything in place.
refused "refused while no period is signed off" "period 2024-05 is not signed off" --period 2024-05 --dir "$dir"
m signoff --period 2024-05 --by "Finance (test)" --note "archive test" >/dev/null
refused "refused while one of the two periods May's events were billed in (UTC+14: June) is not signed off" "period 2024-06 is not signed off" --period 2024-05 --dir "$dir"
refused "refused for the current month: its late window is open" "late window of month" --period "$(date -u +%Y-%m)" --dir "$dir"
q "select status from meter.event_ingest('[{\"customer\": \"arc-utc\", \"meter\": \"arc.calls\", \"idempotency_key\": \"jul-1\", \"occurred_at\": \"2024-07-02T10:00:00Z\"}]'::jsonb, interval '5 minutes', interval '10 years')" >/dev/null
q "select events_folded from meter.rollup_run()" >/dev/null
refused "refused for a month whose events are billed in a period not closed" "customer arc-utc, period 2024-07: not closed" --period 2024-07 --dir "$dir"
if out=$(m signoff --period 2024-09 --by "Finance" 2>&1); then nok "signoff of a period without invoices is refused" "$out"
else grep -q "has no invoice" <<<"$out" && ok "signoff of a period without invoices is refused" || nok "signoff of a period without invoices is refused" "$out"; fi
is "$(q "select count(*) from meter.event_archives")|$(ls "$dir" | wc -l)|$(q "select to_regclass('meter.events_2024_05') is not null")" "0|0|t" \
   "after the refusals: nothing archived, no file written, the partition in place"

# The archive.
m signoff --period 2024-06 --by "Finance (test)" >/dev/null
out=$(m events archive --period 2024-05 --dir "$dir" --sample 50 2>&1); status=$?
is "$status" "0" "meterctl events archive --period 2024-05 succeeds once both periods are signed off"
grep -q "^verify: .* holds the partition's $may_events rows exactly" <<<"$out" && ok "it verified the file row for row ($may_events rows)" || nok "row-for-row verification line" "$out"
checked=$(sed -n 's/^verify: \([0-9]*\) invoice lines.*/\1/p' <<<"$out")
is "$( [[ "${checked:-0}" -ge 6 ]] && echo yes)" "yes" "it recomputed $checked invoice lines' events hashes from the file (both customers, both periods)"
is "$(cd "$dir" && sha256sum -c events-2024-05.copy.sha256 2>&1)" "events-2024-05.copy: OK" "sha256sum -c accepts the file beside its SHA-256"
is "$(q "select sha256 || '|' || events || '|' || hashes_checked from meter.event_archives where period_start = '2024-05-01 00:00+00'")" \
   "$(cut -d' ' -f1 "$dir/events-2024-05.copy.sha256")|$may_events|$checked" "meter.event_archives records the file's SHA-256, its rows and the hashes checked"
is "$(wc -l < "$dir/events-2024-05.copy" | tr -d ' ')" "$may_events" "the file holds one line per event"
is "$(q "select to_regclass('meter.events_2024_05') is null")|$(q "select count(*) from meter.events where occurred_at >= '2024-05-01 00:00+00' and occurred_at < '2024-06-01 00:00+00'")" \
   "t|0" "the partition is detached and dropped"
is "$(q "select count(*) from meter.event_keys where archived_digest is not null")" "$may_events" "every key of May keeps its content digest"
is "$(q "select count(*) from meter.sync_outbox where hour >= '2024-05-01 00:00+00' and hour < '2024-06-01 00:00+00'")|$(q "select outbox_rows from meter.event_archives")|$( [[ $may_outbox -gt 0 ]] && echo some)" \
   "0|$may_outbox|some" "May's $may_outbox billing outbox rows left with it (and are counted in meter.event_archives)"
is "$(q "select count(*) > 0 from meter.sync_outbox where hour >= '2024-06-01 00:00+00' and hour < '2024-07-01 00:00+00'")" "t" "June's outbox rows stay"

# What keeps working.
after=$(q "select string_agg(i.id || ':' || i.total || ':' || l.line_no || ':' || l.quantity || ':' || l.events_hash, ',' order by i.id, l.line_no) from meter.invoices i join meter.invoice_lines l on l.invoice_id = i.id")
is "$after" "$before" "invoices and their lines are unchanged"
# a-1200: arc-utc, arc.tokens, 2024-05-16T00:00:00Z, value 203, model big (seed.sql's formulas)
is "$(q "select status || ':' || (event_id = (select event_id from meter.event_keys where idempotency_key = 'a-1200')) from meter.event_ingest((select jsonb_agg(jsonb_build_object('customer', 'arc-utc', 'meter', 'arc.tokens', 'idempotency_key', 'a-1200', 'occurred_at', timestamptz '2024-04-01 00:00+00' + 1200 * interval '54 minutes', 'value', (1200 % 997)::text, 'properties', jsonb_build_object('model', 'big')))))")" \
   "duplicate:true" "a retry of an archived event is a duplicate carrying its id (out of the ingest window, as a late retry is)"
is "$(q "select status from meter.event_ingest('[{\"customer\": \"arc-utc\", \"meter\": \"arc.tokens\", \"idempotency_key\": \"a-1200\", \"occurred_at\": \"2024-05-16T00:00:00Z\", \"value\": 1}]'::jsonb)")" \
   "conflict" "the same key with other content is a conflict"
is "$(q "select status || ':' || code from meter.event_cancel('[{\"customer\": \"arc-utc\", \"idempotency_key\": \"a-1200\"}]')")" \
   "rejected:event_archived" "a cancellation of an archived event is refused: event_archived"
is "$(q "select sum(quantity) || '/' || sum(event_count) from meter.usage('arc-utc', 'arc.calls', '2024-05-01 00:00+00', '2024-06-01 00:00+00', 'day')")" \
   "$usage_before" "usage of the archived month is still served from the rollups, unchanged"
is "$(q "select count(*) from meter.events_partitions_ensure('2024-05-01', '2024-05-01') where created")|$(q "select to_regclass('meter.events_2024_05') is null")" \
   "0|t" "meter.events_partitions_ensure does not re-create the archived month"
refused "archiving May again is refused" "archived already" --period 2024-05 --dir "$dir"
m signoff --period 2024-04 --by "Finance (test)" >/dev/null
echo "something else" > "$dir/events-2024-04.copy"
refused "an existing archive file is never overwritten" "exists already" --period 2024-04 --dir "$dir"
is "$(q "select to_regclass('meter.events_2024_04') is not null")|$(cat "$dir/events-2024-04.copy")" "t|something else" \
   "and then April's partition and the file are left as they were"
# A change after a close must be invoiced before its month can go; then a second month goes
# (April: the UTC+14 customer's May line, which also covers April's last hours, is left out of
# the sample since May is archived).
rm -f "$dir/events-2024-04.copy"
q "select status from meter.event_ingest('[{\"customer\": \"arc-utc\", \"meter\": \"arc.calls\", \"idempotency_key\": \"late-apr\", \"occurred_at\": \"2024-04-15T10:00:00Z\"}]'::jsonb, interval '5 minutes', interval '10 years')" >/dev/null
q "select events_folded from meter.rollup_run()" >/dev/null
refused "a late event of April not invoiced yet (no close after it) refuses April" "after its close is not invoiced yet" --period 2024-04 --dir "$dir"
m close --period 2024-07 >/dev/null || nok "setup: close of July"
out=$(m events archive --period 2024-04 --dir "$dir" --sample 50 2>&1); status=$?
is "$status" "0" "once July's close invoiced that adjustment, April is archived too"
n_apr=$(sed -n "s/^verify: \([0-9]*\) invoice lines' events hashes recomputed from the file equal the database's; \([0-9]*\) of them also the invoice's$/\1=\2/p" <<<"$out")
[[ -n "$n_apr" && "${n_apr%=*}" == "${n_apr#*=}" ]] && ! grep -q '^warning' <<<"$out" \
  && ok "April's sample ($n_apr) equals the invoices' hashes: the line that also covers archived May was left out, the late event excluded" \
  || nok "April's sample" "$out"
is "$(q "select count(*) from meter.event_archives")|$(q "select count(*) from meter.events where occurred_at < '2024-06-01 00:00+00'")" "2|0" \
   "two months archived, none of their events left in meter.events"

# What stops: verification from raw events of that month.
is "$(q "select count(*) > 0 from meter.rollup_verify('2024-05-01', '2024-06-01')")" "t" \
   "rollup verify of the archived month now reports its hours (its raw events are in the file): documented"

echo "1..$n"
echo "archive: $n checks, $failed failed"
[[ $failed == 0 ]]
