#!/usr/bin/env bash
# Tests/runbook/runbook_test.sh: runs every command of docs/runbook.md against a scratch instance.
#
# Usage, from the repository root, with .build/debug/meterctl built:  Tests/runbook/runbook_test.sh
#
#   1. a scratch instance: the embedded cluster .meter/runbook-pg (port 54359, left running for
#      reuse), a fresh database meter_runbook, the mock billing engine on 18091 and
#      `meterctl serve` on 18092 (logs under .meter/runbook/);
#   2. a seed, so that the procedures find real data: customers acme and globex on plan
#      "standard" (usd), meters api_calls (count) and storage_gb_hours (sum) mirrored to and
#      billed through the engine, an API key, a webhook endpoint (hence a secret), events of the
#      previous month, that month synced, invoiced by the engine (test clock) and closed, one
#      event of this month, and a forgotten psql session inside BEGIN holding the rollup back;
#   3. every ```sh block of docs/runbook.md, in order, each as its own `bash -euo pipefail`
#      script in .meter/runbook/work with DATABASE_URL, METER_URL, METER_BILLING_API_BASE,
#      METER_BILLING_API_KEY and METER_API_KEY exported and meterctl on PATH; every ```sh host
#      block (commands of the production host only) through `bash -n`, and every meterctl
#      subcommand it names must exist;
#   4. prints `ok N - <section>: <first line>` or `not ok N - ...` with the block's output, and
#      `runbook: X blocks, Y commands run, Z failed`; exits 1 on any failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
bin="$root/.build/debug"
runbook="${RUNBOOK:-$root/docs/runbook.md}"   # RUNBOOK=... to try another copy
state="$root/.meter/runbook"
mock_port=18091
serve_port=18092
engine_key=sk_test_runbook

# The seed closes the previous calendar month (UTC), as the runbook's month-end checklist does;
# both are refused until its end plus the 1-hour grace has passed.
if [[ $(date -u +%d) == 01 ]] && (( 10#$(date -u +%H) < 2 )); then
  echo "runbook: skipped: last month cannot be closed before 02:00 UTC on the 1st (grace); run later"
  exit 0
fi

# What the runbook's commands use (scripts/setup.sh installs them).
for tool in psql pg_dump curl jq awk; do
  command -v "$tool" >/dev/null || { echo "runbook test needs $tool on PATH" >&2; exit 2; }
done

# The binary may be being rebuilt by someone else: wait a little for it.
for _ in $(seq 1 12); do [[ -x "$bin/meterctl" ]] && break; sleep 5; done
[[ -x "$bin/meterctl" ]] || { echo "no $bin/meterctl: run swift build first" >&2; exit 2; }

rm -rf "$state"
mkdir -p "$state/work" "$state/blocks"
export PATH="$bin:$PATH"
export LOG_LEVEL=warning METER_SQL_DIR="$root/sql"

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

wait_http() {  # URL: wait up to 30 s for a 2xx
  for _ in $(seq 1 300); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "no answer from $1" >&2; return 1
}
for port in $mock_port $serve_port; do
  if curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; then
    echo "port $port is taken (a previous run still going?); stop that process first" >&2; exit 2
  fi
done

echo "== scratch instance"
pg=(--data-dir .meter/runbook-pg --pg-port 54359 --log-level warning)
meterctl db start "${pg[@]}" >/dev/null 2>&1
export PGOPTIONS="-c client_min_messages=warning"
conninfo=$(meterctl db status "${pg[@]}" | sed -n 's/^open with: *psql "\(.*\)"$/\1/p')
[[ -n "$conninfo" ]] || { echo "meterctl db status gave no conninfo" >&2; exit 2; }
psql -X -q "$conninfo" -c "drop database if exists meter_runbook with (force)" -c "create database meter_runbook"
export DATABASE_URL="${conninfo/dbname=meter /dbname=meter_runbook }"
export METER_URL="http://127.0.0.1:$serve_port"
export METER_BILLING_API_BASE="http://127.0.0.1:$mock_port"
export METER_BILLING_API_KEY="$engine_key"
meterctl migrate >/dev/null
q() { psql -X -At -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "$1"; }

"$root/Tests/support/ports_free.sh" "$mock_port" "$serve_port" || exit 1
meterctl billing-mock --port "$mock_port" 2>"$state/billing-mock.log" &
pids+=($!)
wait_http "$METER_BILLING_API_BASE/healthz"

period=$(date -u -d "$(date -u +%Y-%m-01) -1 month" +%Y-%m)
period_end=$(date -u -d "$period-01 +1 month" +%s)
echo "== seed (period $period)"

# An engine test clock at the last second of that month: the billing customers are created on
# it, so their subscriptions start with that month and take its usage (docs/billing-mock.md).
clock=$(curl -fsS "$METER_BILLING_API_BASE/v1/test_helpers/test_clocks" -H "Authorization: Bearer $engine_key" \
          -d frozen_time=$((period_end - 1)) -d name=runbook | jq -r .id)

meterctl customers add acme --name "Acme Corp" --timezone UTC
meterctl customers add globex --name "Globex" --timezone UTC
meterctl meters add api_calls --aggregation count --name "API calls" --unit requests
meterctl meters add storage_gb_hours --aggregation sum --name "Storage" --unit GB-hours
meterctl plans add standard --currency usd --name "Standard"
meterctl plans price standard --meter api_calls --model per_unit --unit-amount 0.5
meterctl plans price standard --meter storage_gb_hours --model graduated \
  --tiers '[{"up_to":100,"unit_amount":2},{"up_to":null,"unit_amount":1,"flat_amount":50}]'
meterctl customers subscribe acme --plan standard --from "$period"
meterctl customers subscribe globex --plan standard --from "$period"
# Mirror the plan to the engine before anything is linked, and bill both meters through it.
meterctl plans mirror --value-scale storage_gb_hours=1   # Billing Meters take whole numbers: tenths of a GB-hour
for meter in api_calls storage_gb_hours; do
  price=$(q "select pp.engine_price_id from meter.plan_prices pp join meter.meters m on m.id = pp.meter_id
             join meter.plans p on p.id = pp.plan_id where p.code = 'standard' and m.code = '$meter'")
  meterctl billing price --meter "$meter" --price-id "$price"
done
METER_API_KEY=$(meterctl keys create --name runbook --quiet)
export METER_API_KEY

meterctl serve --port "$serve_port" --past-tolerance-seconds 8640000 --billing-test-clock "$clock" \
  --billing-api-base "$METER_BILLING_API_BASE" --billing-api-key "$engine_key" 2>"$state/serve.log" &
pids+=($!)
wait_http "$METER_URL/readyz"
# The engine's signed webhooks come back to the service (this stores the endpoint's secret).
meterctl billing endpoint --url "$METER_URL/webhooks/billing"

# Usage of the previous month: api_calls on three days, storage samples; the whole batch is then
# delivered a second time (every event a duplicate).
events="[]"
for day in 03 12 27; do
  for hour in 08 09 14; do
    for n in 1 2 3; do
      for customer in acme globex; do
        events=$(jq -c --arg c "$customer" --arg k "req-$period-$day-$hour-$n" --arg t "$period-${day}T$hour:1$n:00Z" \
                   '. + [{customer: $c, meter: "api_calls", idempotency_key: $k, occurred_at: $t}]' <<<"$events")
      done
    done
  done
  events=$(jq -c --arg k "st-$period-$day" --arg t "$period-${day}T12:00:00Z" \
             '. + [{customer: "acme", meter: "storage_gb_hours", idempotency_key: $k, occurred_at: $t, value: "120.5"}]' <<<"$events")
done
post() { curl -fsS "$METER_URL/v1/events" -H "Authorization: Bearer $METER_API_KEY" -H 'Content-Type: application/json' -d "$1"; }
post "$events" >"$state/ingest.json"
post "$events" >/dev/null
[[ $(jq '[.results[] | select(.status == "accepted")] | length' "$state/ingest.json") == 57 ]] \
  || { echo "seed events not all accepted:"; cat "$state/ingest.json"; exit 1; }

# Drained: everything rolled up and every hour acknowledged by the engine.
for i in $(seq 1 300); do
  left=$(q "select (select pending_events + pending_cancellations from meter.rollup_lag)
                 + (select pending + in_flight from meter.sync_backlog)")
  [[ $left == 0 ]] && break
  [[ $i == 300 ]] && { echo "seed did not drain in 30 s"; meterctl sync status; exit 1; }
  sleep 0.1
done

# The month closed with the engine: the test clock passes its end, the engine invoices, its
# webhooks come back, its usage summaries are fetched, then our close.
meterctl close --period "$period" --billing-test-clock "$clock"
[[ $(q "select count(*) from meter.invoices where period = '$period'") == 2 ]] \
  || { echo "seed: the close of $period made no invoices"; exit 1; }
# The engine's clock to now, so that usage of this month is not in its future.
curl -fsS "$METER_BILLING_API_BASE/v1/test_helpers/test_clocks/$clock/advance" \
  -H "Authorization: Bearer $engine_key" -d frozen_time="$(date -u +%s)" >/dev/null
meterctl reconcile --period "$period" --format csv --output "$state/reconciliation-seed.csv"

# A forgotten interactive session inside BEGIN that took a transaction id, then one event of this
# month: the event waits for that session (the rollup never passes an older open transaction).
# docs/runbook.md finds the session and ends it ("Rollup lag; horizon held back by a long
# transaction"), which the checks at the end verify.
# (psql reads a FIFO kept open on fd 3: it sits idle in transaction until this script exits.)
mkfifo "$state/forgotten-psql.fifo"
psql -X -q "$DATABASE_URL application_name=forgotten-psql" <"$state/forgotten-psql.fifo" >/dev/null 2>&1 &
pids+=($!)
exec 3>"$state/forgotten-psql.fifo"
echo "begin; select pg_current_xact_id();" >&3
for _ in $(seq 1 100); do
  [[ $(q "select count(*) from pg_stat_activity where application_name = 'forgotten-psql' and backend_xid is not null") == 1 ]] && break
  sleep 0.1
done
post "{\"customer\":\"acme\",\"meter\":\"api_calls\",\"idempotency_key\":\"req-now-1\",\"occurred_at\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\"}" >/dev/null
for _ in $(seq 1 50); do
  [[ $(q "select waiting_on_horizon from meter.rollup_lag") == 1 ]] && break
  sleep 0.1
done
[[ $(q "select horizon_held_by_pid is not null from meter.rollup_lag") == t ]] \
  || { echo "seed: the forgotten session does not hold the rollup back"; exit 1; }

echo "== docs/runbook.md"
# Each fenced block: its kind (sh or host), its section (the heading above it) and its text.
awk -v dir="$state/blocks" '
  /^#+ / && !inblock { section = $0; sub(/^#+ /, "", section) }
  /^```sh( host)?[[:space:]]*$/ && !inblock {
    inblock = 1; n++; kind = ($0 ~ /host/) ? "host" : "sh"
    file = sprintf("%s/%03d.%s", dir, n, kind)
    print section > (file ".section"); close(file ".section")
    next
  }
  /^```/ && inblock { inblock = 0; close(file); next }
  inblock { print > file }
' "$runbook"

# Every `meterctl ...` read on stdin (one a line) names an existing subcommand, and each --option
# on it is one that subcommand has (for the host blocks and the commands quoted in the prose).
check_meterctl() {
  local line words path help w ok=0
  while IFS= read -r line; do
    read -ra words <<<"$line"
    path=()
    for w in "${words[@]:1}"; do
      [[ $w =~ ^[a-z][a-z-]*$ ]] || break
      help=$(meterctl "${path[@]}" --help 2>&1) || { echo "meterctl ${path[*]}: no such command"; ok=1; break; }
      # (meterctl's own help lists its subcommands in groups: OPERATOR SUBCOMMANDS:, DEVELOPER SUBCOMMANDS:)
      grep -qE '^([A-Z]+ )*SUBCOMMANDS:$' <<<"$help" || break
      if ! sed -nE '/^([A-Z]+ )*SUBCOMMANDS:$/,/^$/p' <<<"$help" | grep -Eq "^  $w( |$)"; then
        echo "meterctl ${path[*]} $w: no such subcommand"; ok=1; break
      fi
      path+=("$w")
    done
    help=$(meterctl "${path[@]}" --help 2>&1) || continue
    for w in "${words[@]}"; do
      [[ $w =~ ^(--[a-z][a-z-]*) ]] || continue
      grep -qE -- "${BASH_REMATCH[1]}( |,|$)" <<<"$help" || { echo "meterctl ${path[*]}: no option ${BASH_REMATCH[1]}"; ok=1; }
    done
  done
  return $ok
}
meterctl_lines() {  # FILE: the meterctl command of each line, up to a pipe, ;, & or )
  grep -oE 'meterctl [a-z][^|;&)`#]*' "$1" || true
}

count_commands() {  # FILE: logical command lines (comments, blank lines and continuations excluded)
  awk '/^[[:space:]]*(#|$)/ { next } !cont { n++ } { cont = /\\$/ } END { print n + 0 }' "$1"
}

blocks=0 commands=0 failed=0
for path in "$state"/blocks/[0-9][0-9][0-9].sh "$state"/blocks/[0-9][0-9][0-9].host; do
  if [[ -e $path ]]; then echo "$path"; fi
done | sort >"$state/blocks/list"
while IFS= read -r path; do
  file=${path##*/}
  blocks=$((blocks + 1))
  section=$(cat "$path.section")
  first=$(grep -v '^[[:space:]]*\(#\|$\)' "$path" | head -1 | cut -c1-72)
  n=$(count_commands "$path")
  if [[ $file == *.host ]]; then
    out=$( { bash -n "$path" && meterctl_lines "$path" | check_meterctl; } 2>&1 ) && status=0 || status=$?
    label=" (host: syntax and subcommands only)"
  else
    out=$(cd "$state/work" && timeout 180 bash -euo pipefail "$path" </dev/null 2>&1) && status=0 || status=$?
    commands=$((commands + n))
    label=""
  fi
  if [[ $status == 0 ]]; then
    echo "ok $blocks - $section: $first$label"
  else
    failed=$((failed + 1))
    echo "not ok $blocks - $section: $first$label (exit $status)"
    sed 's/^/    # /' <<<"$out"
  fi
  printf '%s\n' "$out" >"$path.out"
done <"$state/blocks/list"

# Checks beyond the blocks, each an "ok"/"not ok" line of its own.
extra_fail=0
check() {  # DESCRIPTION COMMAND...: runs the command quietly
  local description=$1; shift
  if out=$("$@" 2>&1); then echo "ok - $description"
  else echo "not ok - $description"; sed 's/^/    # /' <<<"$out"; extra_fail=$((extra_fail + 1)); fi
}
slug() { tr 'A-Z' 'a-z' | sed -e 's/[^a-z0-9 _-]//g' -e 's/ /-/g'; }
anchors_resolve() {  # every #anchor of the runbook and of deploy/alerts.yml names a heading
  local headings missing=0 a
  headings=$(grep -E '^#{1,6} ' "$runbook" | sed -E 's/^#+ //' | slug)
  for a in $( { grep -oE '\]\(#[^)]+\)' "$runbook" | sed -E 's/^\]\(#//; s/\)$//'
               grep -oE 'runbook\.md#[a-z0-9_-]+' "$root/deploy/alerts.yml" | sed 's/.*#//'; } | sort -u); do
    grep -qxF "$a" <<<"$headings" || { echo "no heading for #$a"; missing=1; }
  done
  return $missing
}
metrics_real() {  # the Metrics table lists exactly the metrics defined in Sources; alerts and
                  # PromQL in the runbook name only those (and Prometheus' own `up`)
  local defined listed used bad=0 m
  defined=$(grep -rhoE 'name: "(meter|billing_mock)_[a-z_]+"' "$root/Sources" | cut -d'"' -f2 | sort -u)
  listed=$(grep -E '^\| `(meter|billing_mock)_' "$runbook" | cut -d'|' -f2 | grep -oE '(meter|billing_mock)_[a-z_]+' | sort -u)
  if [[ "$defined" != "$listed" ]]; then
    echo "Metrics table differs from Sources (< Sources, > runbook):"; diff <(echo "$defined") <(echo "$listed") || true; bad=1
  fi
  used=$(cat "$runbook" "$root/deploy/alerts.yml" \
    | grep -oE '\b(meter|billing_mock)_[a-z_]+_?(total|seconds|seconds_bucket|hours|events|waiters|connections|unprocessed|commit|cancellations)\b' \
    | sed -E 's/_(bucket|sum|count)$//' | sort -u)
  for m in $used; do grep -qxF "$m" <<<"$defined" || { echo "not a metric of meter: $m"; bad=1; }; done
  return $bad
}
check "the long-transaction procedure ended the forgotten session" \
  test "$(q "select count(*) from pg_stat_activity where application_name = 'forgotten-psql'")" = 0
check "the rollup caught up (no pending events)" test "$(q "select pending_events from meter.rollup_lag")" = 0
check "every #anchor of the runbook and deploy/alerts.yml names a heading" anchors_resolve
prose_commands() {  # the `meterctl ...` quoted outside the fenced blocks
  awk '/^```/ { fenced = !fenced; next } !fenced' "$runbook" | grep -oE '`meterctl [^`]*`' | tr -d '`' | check_meterctl
}
check "the meterctl commands quoted in the prose exist, with their options" prose_commands
check "metric names in the runbook and deploy/alerts.yml are real" metrics_real
if command -v promtool >/dev/null; then
  check "promtool check rules deploy/alerts.yml" promtool check rules "$root/deploy/alerts.yml"
elif ! python3 -c 'import yaml' 2>/dev/null; then
  echo "ok - deploy/alerts.yml not checked # SKIP neither promtool (Debian: prometheus) nor PyYAML here"
else
  check "deploy/alerts.yml is YAML with 14+ rules (no promtool here)" python3 -c '
import sys, yaml
rules = [r for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"]]
assert len(rules) >= 14 and all({"alert", "expr", "labels", "annotations"} <= set(r) for r in rules)' "$root/deploy/alerts.yml"
fi
failed=$((failed + extra_fail))

echo "runbook: $blocks blocks, $commands commands run, $failed failed"
[[ $failed == 0 ]]
