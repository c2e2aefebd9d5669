#!/usr/bin/env bash
# scripts/bench-commit-path.sh [--preload N] [--seconds S] [--clients "1 4 16"]
#
# The ingest commit path, measured with pgbench on a private embedded cluster (.meter/bench-pg,
# port 54349): one new event per transaction through `meter.event_ingest_arrays` (the exact call
# the service makes, API key included), at 1, 4 and 16 clients, beside three baselines run the
# same way in the same cluster and the same minutes:
#   insert        a durable one-row INSERT per transaction into a plain table (the ceiling);
#   events_insert a one-row INSERT into meter.events itself (its indexes and CHECK constraints,
#                 no function, no key table, no key check): what the table alone costs;
#   ingest+notify the same ingest plus a NOTIFY in its transaction: what every ingest
#                 transaction did before issue 19 (the NOTIFY queue's lock is held from the
#                 pre-commit step to the end of the WAL flush, so commits go out one at a time).
# Prints a table (transactions/s, mean latency) and the ratio ingest / insert per client count.
# `--preload N` events are inserted first (default 1,000,000; the issue measured 6.2 M) so that the
# unique index is not trivially small. Takes about (3 × clients counts × S) seconds plus the preload.
set -euo pipefail
cd "$(dirname "$0")/.."
preload=1000000; seconds=10; clients="1 4 16"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preload) preload=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    *) echo "usage: $0 [--preload N] [--seconds S] [--clients \"1 4 16\"]" >&2; exit 2 ;;
  esac
done

./scripts/setup.sh
if [[ ! -x .build/debug/meterctl ]]; then swift build --product meterctl 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true; fi
pg=(--data-dir "$PWD/.meter/bench-pg" --pg-port 54349 --log-level warning)
.build/debug/meterctl db start "${pg[@]}" >/dev/null
conninfo=$(.build/debug/meterctl db status "${pg[@]}" | sed -n 's/^open with: *psql "\(.*\)"$/\1/p')
host=$(sed -n 's/.*host=\([^ ]*\).*/\1/p' <<<"$conninfo")
db=meter_bench_commit
psql -X -q "$conninfo" -c "drop database if exists $db with (force)" -c "create database $db"
dbinfo="${conninfo/dbname=meter/dbname=$db}"
DATABASE_URL="$dbinfo" .build/debug/meterctl migrate --log-level warning >/dev/null
token="mk_bench_commit_path_$(date +%s)"
echo "== preparing: customer, meter, API key, $preload preloaded events, the baseline table"
psql -X -q "$dbinfo" <<SQL
select meter.customer_upsert('bench-c1');
select meter.meter_upsert('bench_units', 'sum');
select meter.api_key_create('bench-commit', left('$token', 12), sha256(convert_to('$token', 'UTF8')));
-- each preloaded event with its key, as ingest stores them (the key table's index sized too)
with e as materialized (
  select nextval('meter.event_ids') as id, 'pre-' || g as k from generate_series(1, $preload) g
), keys as (
  insert into meter.event_keys (customer_id, idempotency_key, event_id, occurred_at)
  select (select id from meter.customers where external_id = 'bench-c1'), e.k, e.id, now() - interval '1 day' from e
)
insert into meter.events (id, customer_id, meter_id, idempotency_key, occurred_at, value, properties)
select e.id, (select id from meter.customers where external_id = 'bench-c1'),
       (select id from meter.meters where code = 'bench_units'),
       e.k, now() - interval '1 day', 1, '{}'
from e;
create table public.bench_insert_baseline (id bigserial primary key, k text not null unique, v numeric not null);
vacuum analyze;
SQL

dir=$(mktemp -d)
ingest_call="select count(*) from meter.event_ingest_arrays(array['bench-c1'], array['bench_units'], array[gen_random_uuid()::text], array[now()], array[1]::numeric[], array['{}']::jsonb[], interval '5 minutes', interval '35 days', sha256(convert_to('$token', 'UTF8')));"
cat >"$dir/ingest.sql" <<SQL
$ingest_call
SQL
cat >"$dir/ingest_notify.sql" <<SQL
begin;
$ingest_call
select pg_notify('meter_events', '');
commit;
SQL
cat >"$dir/events_insert.sql" <<SQL
insert into meter.events (customer_id, meter_id, idempotency_key, occurred_at, value, properties)
values ((select id from meter.customers where external_id = 'bench-c1'), (select id from meter.meters where code = 'bench_units'), gen_random_uuid()::text, now(), 1, '{}');
SQL
cat >"$dir/insert.sql" <<SQL
insert into public.bench_insert_baseline (k, v) values (gen_random_uuid()::text, 1);
SQL

declare -A tps lat
for c in $clients; do
  for kind in insert events_insert ingest ingest_notify; do
    j=$(( c < 2 ? 1 : 2 ))
    echo "== $kind, $c client(s), ${seconds} s"
    out=$(pgbench -n -M prepared -h "$host" -p 54349 -U meter -c "$c" -j "$j" -T "$seconds" -P 5 -f "$dir/$kind.sql" "$db" 2>&1) \
      || { echo "$out"; exit 1; }
    grep -E '^progress:' <<<"$out" || true
    tps[$kind,$c]=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -1)
    lat[$kind,$c]=$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out" | head -1)
  done
done
rm -rf "$dir"

echo
echo "== ingest commit path, $(nproc) cores, $preload events preloaded, ${seconds} s per run, $(date -u +%Y-%m-%d)"
printf '| %-7s | %-22s | %-22s | %-22s | %-22s | %-15s |\n' clients "insert (tx/s, ms)" "events INSERT (tx/s, ms)" "event_ingest_arrays (tx/s, ms)" "ingest+NOTIFY (tx/s, ms)" "ingest / insert"
printf '|---|---|---|---|---|---|\n'
for c in $clients; do
  ratio=$(awk -v a="${tps[ingest,$c]}" -v b="${tps[insert,$c]}" 'BEGIN { printf "%.2f", a / b }')
  printf '| %-7s | %10.0f, %6.2f ms | %10.0f, %6.2f ms | %10.0f, %6.2f ms | %10.0f, %6.2f ms | %-15s |\n' "$c" \
    "${tps[insert,$c]}" "${lat[insert,$c]}" "${tps[events_insert,$c]}" "${lat[events_insert,$c]}" "${tps[ingest,$c]}" "${lat[ingest,$c]}" \
    "${tps[ingest_notify,$c]}" "${lat[ingest_notify,$c]}" "$ratio"
done
