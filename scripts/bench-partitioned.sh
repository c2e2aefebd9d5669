#!/usr/bin/env bash
# scripts/bench-partitioned.sh [--preload N] [--seconds S] [--rounds R]
#
# Ingest and rollup on the partitioned layout (migration 0021: monthly partitions, the key table)
# beside the layout before it, in the same cluster and the same minutes. Two databases in a
# private embedded cluster (.meter/bench-pg, port 54349):
#   before  migrated with the sql/ of the commit before 0021 (git archive of BASE: the product as
#           it was, functions included)
#   after   migrated with today's sql/
# Each gets the same customers and meters and N events (default 1,000,000) over the last 60 days
# through its own meter.event_ingest_arrays (so across two or three monthly partitions after),
# not rolled up. Then:
#   single  pgbench, one new event per transaction through meter.event_ingest_arrays, 8 clients,
#           S seconds, alternating before/after for R rounds
#   batch   pgbench, 1,000 new events per transaction, 2 clients, likewise
#   rollup  meter.rollup_run over the backlog (the N preloaded events, then what the ingest runs
#           added), once per database, beside the read-only GROUP BY of the same rows in the same
#           database (the rollup benchmark's baseline); rollup_verify must be empty afterwards
# Prints each figure and the ratio after / before.
set -euo pipefail
cd "$(dirname "$0")/.."
base=7d467f7   # the last commit before migration 0021
preload=1000000; seconds=10; rounds=2
while [[ $# -gt 0 ]]; do
  case "$1" in
    --preload) preload=$2; shift 2 ;;
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "usage: $0 [--preload N] [--seconds S] [--rounds R]" >&2; exit 2 ;;
  esac
done

./scripts/setup.sh
if [[ ! -x .build/debug/meterctl ]]; then swift build --product meterctl 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true; fi
pg=(--data-dir "$PWD/.meter/bench-pg" --pg-port 54349 --log-level warning)
.build/debug/meterctl db start "${pg[@]}" >/dev/null
conninfo=$(.build/debug/meterctl db status "${pg[@]}" | sed -n 's/^open with: *psql "\(.*\)"$/\1/p')
host=$(sed -n 's/.*host=\([^ ]*\).*/\1/p' <<<"$conninfo")
old=$(mktemp -d); dir=$(mktemp -d)
trap 'rm -rf "$old" "$dir"' EXIT
git archive "$base" sql | tar -x -C "$old"

for side in before after; do
  db=meter_bench_$side
  psql -X -q "$conninfo" -c "drop database if exists $db with (force)" -c "create database $db"
  dbinfo="${conninfo/dbname=meter/dbname=$db}"
  if [[ $side == before ]]; then sqldir=$old/sql; else sqldir=$PWD/sql; fi
  DATABASE_URL="$dbinfo" .build/debug/meterctl migrate --sql-dir "$sqldir" --log-level warning >/dev/null
  echo "== $side: preloading $preload events through meter.event_ingest_arrays"
  psql -X -q "$dbinfo" <<SQL
select count(meter.customer_upsert('bench-c' || g)) from generate_series(0, 99) g;
select meter.meter_upsert('bench_units', 'sum'), meter.meter_upsert('bench_calls');
$( [[ $side == after ]] && echo "select count(*) from meter.events_partitions_ensure(now() - interval '70 days', now() + interval '3 months');" )
do \$\$
declare i integer;
begin
  for i in 0 .. ($preload / 10000) - 1 loop
    perform count(*) from meter.event_ingest_arrays(
      array(select 'bench-c' || (g % 100) from generate_series(1, 10000) g),
      array(select case when g % 3 = 0 then 'bench_calls' else 'bench_units' end from generate_series(1, 10000) g),
      array(select 'pre-' || i || '-' || g from generate_series(1, 10000) g),
      array(select now() - (g * 37 % 5184000) * interval '1 second' from generate_series(1, 10000) g),
      array(select (g % 100)::numeric from generate_series(1, 10000) g),
      array(select '{}'::jsonb from generate_series(1, 10000) g),
      interval '5 minutes', interval '70 days', null);
  end loop;
end \$\$;
vacuum analyze;
SQL
done

cat >"$dir/single.sql" <<'SQL'
select count(*) from meter.event_ingest_arrays(array['bench-c' || (random() * 99)::int], array['bench_units'], array[gen_random_uuid()::text], array[now()], array[1]::numeric[], array['{}']::jsonb[], interval '5 minutes', interval '70 days', null);
SQL
cat >"$dir/batch.sql" <<'SQL'
select count(*) from meter.event_ingest_arrays(array(select 'bench-c' || (g % 100) from generate_series(1, 1000) g), array_fill('bench_units'::text, array[1000]), array(select gen_random_uuid()::text from generate_series(1, 1000)), array_fill(now(), array[1000]), array_fill(1::numeric, array[1000]), array_fill('{}'::jsonb, array[1000]), interval '5 minutes', interval '70 days', null);
SQL

declare -A sum
for r in $(seq 1 "$rounds"); do
  for kind in single batch; do
    for side in before after; do
      if [[ $kind == single ]]; then c=8; else c=2; fi
      out=$(pgbench -n -M prepared -h "$host" -p 54349 -U meter -c "$c" -j 2 -T "$seconds" -f "$dir/$kind.sql" "meter_bench_$side" 2>&1) \
        || { echo "$out"; exit 1; }
      tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$out" | head -1)
      if [[ $kind == batch ]]; then per=$(awk -v t="$tps" 'BEGIN { printf "%.0f", t * 1000 }'); else per=$(printf '%.0f' "$tps"); fi
      echo "round $r, $kind, $side: $per events/s ($c clients)"
      sum[$kind,$side]=$(( ${sum[$kind,$side]:-0} + per ))
    done
  done
done

echo "== rollup of the backlog, then the read-only GROUP BY of the same rows, per database"
declare -A fold base_s rows
for side in before after; do
  dbinfo="${conninfo/dbname=meter/dbname=meter_bench_$side}"
  out=$(psql -X -A -t "$dbinfo" <<'SQL'
\timing on
select events_folded from meter.rollup_run(100000000);
select count(*) from (select customer_id, meter_id, date_bin('1 hour', occurred_at, timestamptz '2000-01-01'),
                             count(*), sum(value), max(value) from meter.events group by 1, 2, 3) g;
select count(*) from meter.rollup_verify(now() - interval '80 days', now() + interval '1 hour');
SQL
)
  out=$(grep -v '^Timing is on' <<<"$out")
  rows[$side]=$(sed -n 1p <<<"$out")
  fold[$side]=$(grep '^Time:' <<<"$out" | sed -n 1p | sed 's/Time: \([0-9.]*\) ms.*/\1/')
  base_s[$side]=$(grep '^Time:' <<<"$out" | sed -n 2p | sed 's/Time: \([0-9.]*\) ms.*/\1/')
  diffs=$(grep -v '^Time:' <<<"$out" | sed -n 3p)
  echo "$side: rollup folded ${rows[$side]} events in ${fold[$side]} ms; GROUP BY ${base_s[$side]} ms; rollup_verify differences: $diffs"
  [[ "$diffs" == 0 ]] || { echo "rollup_verify is not empty in $side"; exit 1; }
done

echo
echo "== partitioned events (after) beside the layout before 0021 (before), $(nproc) cores, $preload events preloaded, $rounds rounds of ${seconds} s, $(date -u +%Y-%m-%d)"
printf '| %-34s | %-14s | %-14s | %-11s |\n' measure before after "after/before"
printf '|---|---|---|---|\n'
for kind in single batch; do
  b=$(( ${sum[$kind,before]} / rounds )); a=$(( ${sum[$kind,after]} / rounds ))
  printf '| %-34s | %14s | %14s | %11s |\n' "ingest $kind (events/s)" "$b" "$a" "$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", a / b }')"
done
rb=$(awk -v n="${rows[before]}" -v t="${fold[before]}" 'BEGIN { printf "%.0f", n / t * 1000 }')
ra=$(awk -v n="${rows[after]}" -v t="${fold[after]}" 'BEGIN { printf "%.0f", n / t * 1000 }')
printf '| %-34s | %14s | %14s | %11s |\n' "rollup fold (events/s)" "$rb" "$ra" "$(awk -v a="$ra" -v b="$rb" 'BEGIN { printf "%.2f", a / b }')"
gb=$(awk -v n="${rows[before]}" -v t="${base_s[before]}" 'BEGIN { printf "%.0f", n / t * 1000 }')
ga=$(awk -v n="${rows[after]}" -v t="${base_s[after]}" 'BEGIN { printf "%.0f", n / t * 1000 }')
printf '| %-34s | %14s | %14s | %11s |\n' "read-only GROUP BY (rows/s)" "$gb" "$ga" "$(awk -v a="$ga" -v b="$gb" 'BEGIN { printf "%.2f", a / b }')"
printf '| %-34s | %14s | %14s | %11s |\n' "fold / GROUP BY, same database" \
  "$(awk -v a="$rb" -v b="$gb" 'BEGIN { printf "%.2f", a / b }')" "$(awk -v a="$ra" -v b="$ga" 'BEGIN { printf "%.2f", a / b }')" ""
